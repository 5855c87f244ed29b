"""Writing an export's NDJSON straight into an encrypted blob, one line at a time.

Each file is sealed exactly as a document version or a preview is (``documents.derived``):
a fresh data key wrapped by the keyring, the segmented AES-GCM envelope, and the file's
own id as associated data, so ``documents.content.iter_plaintext`` reads it back. Lines
are gathered into about one segment of plaintext, encrypted, and handed to the blob
writer (a multipart upload on S3): memory stays at a segment or two whatever the size
of the export, and no plaintext ever reaches the disk or the store.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from medvault.crypto.envelope import EnvelopeWriter
from medvault.crypto.keyring import new_dek
from medvault.runtime import Runtime
from medvault.storage.base import BlobWriter

BLOB_PREFIX = "fhir-exports/"


def blob_key(export_id: uuid.UUID, file_id: uuid.UUID) -> str:
    return f"{BLOB_PREFIX}{export_id}/{file_id}"


@dataclass(frozen=True)
class SealedFile:
    """A durable, encrypted NDJSON file not yet recorded in the database."""

    id: uuid.UUID
    resource_type: str
    storage_key: str
    kek_id: str
    wrapped_dek: bytes
    size: int
    sha256: str
    count: int


class EncryptedNdjsonWriter:
    """One NDJSON file: ``write`` resources, then ``commit`` (durable) or ``abort``."""

    def __init__(self, runtime: Runtime, *, export_id: uuid.UUID, resource_type: str) -> None:
        self.id = uuid.uuid4()
        self.resource_type = resource_type
        self.key = blob_key(export_id, self.id)
        self.count = 0
        self._size = 0
        self._digest = hashlib.sha256()
        self._segment = runtime.settings.segment_size
        self._buffer = bytearray()
        dek = new_dek()
        wrapped = runtime.current_keyring().wrap_dek(dek, version_id=self.id)
        self._kek_id, self._wrapped = wrapped.kek_id, wrapped.wrapped
        self._envelope = EnvelopeWriter(
            dek=dek,
            version_id=self.id,
            segment_size=self._segment,
        )
        self._blob: BlobWriter | None = runtime.blobs.writer(self.key)
        self._blob.write(self._envelope.header_bytes())

    def write(self, resource: dict[str, Any]) -> None:
        line = json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        self._buffer += line
        self._digest.update(line)
        self._size += len(line)
        self.count += 1
        if len(self._buffer) >= self._segment:
            self._flush()

    def _flush(self) -> None:
        assert self._blob is not None, "the file is already committed or aborted"
        # A fresh buffer rather than clear(): the envelope may still hold a view of it.
        chunk, self._buffer = self._buffer, bytearray()
        self._blob.write(self._envelope.update_view(chunk))

    def commit(self) -> SealedFile:
        """Encrypt the rest and make the blob durable under its final key."""
        assert self._blob is not None, "the file is already committed or aborted"
        try:
            self._flush()
            self._blob.write(self._envelope.finalize())
            self._blob.commit()
        except BaseException:
            self.abort()
            raise
        self._blob = None
        return SealedFile(
            id=self.id,
            resource_type=self.resource_type,
            storage_key=self.key,
            kek_id=self._kek_id,
            wrapped_dek=self._wrapped,
            size=self._size,
            sha256=self._digest.hexdigest(),
            count=self.count,
        )

    def abort(self) -> None:
        """Discard what was written; safe twice, and after a failed commit."""
        if self._blob is not None:
            blob, self._blob = self._blob, None
            blob.abort()
