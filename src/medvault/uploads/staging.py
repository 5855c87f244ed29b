"""An upload's bytes at rest: a run of chunks, each its own envelope under its own key.

Why not one growing envelope (the final blob written as bytes arrive)? A request can
end anywhere, and the envelope's segment ``i`` has exactly one nonce under the blob's
key. A request that sealed segment ``i``, sent it to the store and then died before
its progress was recorded would, on the client's retry, seal segment ``i`` again under
the same (key, nonce): if the retried bytes differ (another file, a buggy client), GCM
leaks their XOR and its authentication key. Here every chunk, every rewrite of a small
chunk and every retry gets a fresh random data key, and one chunk is one envelope, so
a (key, nonce) pair is used once by construction. The argument, and what it costs,
is in docs/encryption-format.md ("Resumable uploads").

A chunk's plaintext is never on disk or in the store: it is encrypted segment by
segment as it arrives (``EnvelopeWriter``), and read back authenticated
(``documents.content.iter_plaintext``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from medvault.crypto.envelope import EnvelopeWriter
from medvault.crypto.keyring import new_dek
from medvault.documents.content import iter_plaintext
from medvault.runtime import Runtime
from medvault.storage.base import BlobWriter

# Every staged chunk lives under this prefix, one folder per upload.
UPLOAD_BLOB_PREFIX = "uploads/"


def upload_prefix(upload_id: uuid.UUID) -> str:
    return f"{UPLOAD_BLOB_PREFIX}{upload_id}/"


@dataclass(frozen=True)
class SealedChunk:
    """A durable chunk: what its row records, and what opens it (``Sealed``)."""

    id: uuid.UUID
    offset: int
    size: int
    storage_key: str
    kek_id: str
    wrapped_dek: bytes


class ChunkWriter:
    """Encrypts one chunk as it streams; its blob exists only once :meth:`seal` returns."""

    def __init__(self, runtime: Runtime, upload_id: uuid.UUID, *, offset: int) -> None:
        self._runtime = runtime
        self.id = uuid.uuid4()
        self.offset = offset
        self.storage_key = f"{upload_prefix(upload_id)}{self.id}"
        dek = new_dek()
        self._wrapped = runtime.current_keyring().wrap_dek(dek, version_id=self.id)
        self._envelope = EnvelopeWriter(
            dek=dek,
            version_id=self.id,
            segment_size=runtime.settings.segment_size,
        )
        self._writer: BlobWriter | None = None
        self.size = 0
        self.sealed = False

    def feed(self, data: bytes | memoryview) -> None:
        if not data:
            return
        if self._writer is None:
            self._writer = self._runtime.blobs.writer(self.storage_key)
            self._writer.write(self._envelope.header_bytes())
        self._writer.write(self._envelope.update_view(data))
        self.size += len(data)

    def seal(self) -> SealedChunk:
        """Seal the last segment and make the chunk durable under its key."""
        assert self._writer is not None and self.size > 0, "an empty chunk is never sealed"
        self._writer.write(self._envelope.finalize())
        self._writer.commit()
        self.sealed = True
        return SealedChunk(
            id=self.id,
            offset=self.offset,
            size=self.size,
            storage_key=self.storage_key,
            kek_id=self._wrapped.kek_id,
            wrapped_dek=self._wrapped.wrapped,
        )

    def discard(self) -> None:
        """Remove every trace: abort an open write, or delete a sealed but unused chunk."""
        if self._writer is None:
            return
        if self.sealed:
            self._runtime.blobs.delete(self.storage_key)
        else:
            self._writer.abort()


@dataclass(frozen=True)
class _ChunkView:
    """A chunk as ``iter_plaintext`` opens it (its hash is not checked: GCM is)."""

    id: uuid.UUID
    storage_key: str
    kek_id: str
    wrapped_dek: bytes
    size: int
    sha256: str = ""


def chunk_plaintext(runtime: Runtime, chunk: SealedChunk, first: int = 0) -> Iterator[bytes]:
    """A chunk's plaintext from byte ``first``, each segment authenticated before use."""
    view = _ChunkView(chunk.id, chunk.storage_key, chunk.kek_id, chunk.wrapped_dek, chunk.size)
    if first >= chunk.size:
        return iter(())
    return iter_plaintext(runtime, view, first, chunk.size - 1, verify_hash=False)
