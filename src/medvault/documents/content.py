"""Planning a read of a version's bytes: ranges, conditional requests, integrity checks.

``documents.reading`` calls this for every face that serves content; the HTTP side
(``documents.http_content``) turns the plan into a streamed response.

Every segment is authenticated before any of its bytes leave the server. A full
read also re-checks the plaintext SHA-256 against the stored value. Any failure
marks the version corrupt, raises the integrity alarm (log + metric) and aborts the
response: the client never receives wrong bytes, only too few.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from prometheus_client import Counter

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.service import Outcome
from medvault.crypto.envelope import MAX_HEADER_BYTES, EnvelopeHeader, EnvelopeReader
from medvault.crypto.errors import CryptoError, IntegrityError, UnknownKekError
from medvault.crypto.keyring import WrappedDek
from medvault.documents import repository
from medvault.documents.filenames import served_filename
from medvault.documents.models import DocumentVersion, VersionState
from medvault.kit.i18n import N_
from medvault.kit.problems import IntegrityFailure, KeyUnavailable, StorageUnavailable
from medvault.kit.read_conditions import ReadConditions
from medvault.runtime import Runtime
from medvault.storage.base import BlobNotFound, BlobStoreError

logger = logging.getLogger(__name__)

INTEGRITY_FAILURES = Counter(
    "medvault_integrity_failures_total", "Versions whose stored bytes failed verification"
)
BLOB_READ_FAILURES = Counter(
    "medvault_blob_read_failures_total", "Reads that failed because the blob store did not answer"
)
STORE_RETRY_AFTER_SECONDS = 5

YIELD_BYTES = 1024 * 1024


@dataclass
class ContentPlan:
    """The answer to a content read, without HTTP: status, headers and the body to stream."""

    status: int
    headers: dict[str, str]
    body: Iterator[bytes] | None = field(default=None)


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name in ``filename*``."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r'[\\"\x00-\x1f\x7f;]', "_", ascii_name).strip() or "document"
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def report_corruption(
    runtime: Runtime,
    version: DocumentVersion,
    reason: str,
    *,
    context: AuditContext | None = None,
) -> None:
    """Mark the version corrupt, audit it and raise the alarm; never raises itself."""
    INTEGRITY_FAILURES.inc()
    logger.error(
        "INTEGRITY ALARM: version %s of document %s failed verification: %s",
        version.id,
        version.document_id,
        reason,
    )
    try:
        with runtime.clinical.session() as session:
            repository.mark_corrupt(session, version.id)
            audit.record(
                session=session,
                context=context or AuditContext.system("integrity"),
                action="document.version.integrity_failed",
                outcome=Outcome.FAILURE,
                resource_type="DocumentVersion",
                resource_id=version.id,
                patient_id=repository.patient_of(session, version.document_id),
                details={
                    "document_id": str(version.document_id),
                    "version": version.version,
                    "reason": reason,
                },
            )
            session.commit()
    except Exception:
        logger.exception("could not mark version %s corrupt", version.id)


class Sealed(Protocol):
    """An encrypted blob and what opens it: a version, or something derived from one."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def storage_key(self) -> str: ...
    @property
    def kek_id(self) -> str: ...
    @property
    def wrapped_dek(self) -> bytes: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...


def open_reader(runtime: Runtime, version: Sealed) -> EnvelopeReader:
    """Read and check the blob header, and unwrap the blob's data key."""
    try:
        head = b"".join(runtime.blobs.read(version.storage_key, offset=0, length=MAX_HEADER_BYTES))
    except BlobNotFound:
        raise IntegrityError("blob is missing") from None
    header = EnvelopeHeader.parse(head)
    if header.version_id != version.id:
        raise IntegrityError("blob belongs to another version")
    dek = runtime.unwrap_dek(WrappedDek(version.kek_id, version.wrapped_dek), version_id=version.id)
    return EnvelopeReader(dek=dek, header=header, plaintext_size=version.size)


def iter_plaintext(
    runtime: Runtime, version: Sealed, first: int, last: int, *, verify_hash: bool
) -> Iterator[bytes]:
    """Decrypted bytes ``first..last`` in ~1 MiB pieces; raises IntegrityError on any fault."""
    reader = open_reader(runtime, version)
    span = reader.span(first, last)
    ciphertext = runtime.blobs.read(
        version.storage_key, offset=span.ciphertext_offset, length=span.ciphertext_length
    )
    digest = hashlib.sha256() if verify_hash else None
    pending: list[bytes] = []
    pending_size = 0
    for piece in reader.decrypt_span(span, ciphertext):
        if digest is not None:
            digest.update(piece)
        pending.append(piece)
        pending_size += len(piece)
        if pending_size >= YIELD_BYTES:
            yield b"".join(pending)
            pending, pending_size = [], 0
    # The last piece is held back until the whole-file hash is confirmed.
    if digest is not None and digest.hexdigest() != version.sha256:
        raise IntegrityError("plaintext SHA-256 does not match the stored value")
    if pending:
        yield b"".join(pending)


def _guarded(
    runtime: Runtime, version: DocumentVersion, chunks: Iterator[bytes]
) -> Iterator[bytes]:
    try:
        yield from chunks
    except UnknownKekError as exc:
        # A key this instance lacks (e.g. a rotation not yet rolled out everywhere) says
        # nothing about the blob: refuse this read, but never mark the version corrupt.
        logger.error("version %s needs a KEK this instance does not hold", version.id)
        raise KeyUnavailable() from exc
    except (CryptoError, BlobNotFound) as exc:
        report_corruption(runtime, version, str(exc))
        raise IntegrityFailure() from exc
    except BlobStoreError as exc:
        # An outage of the store (unreachable, a transport fault) is not corruption:
        # the version stays readable once the store is back, so no alarm, but a 503
        # the client may retry instead of a 500.
        BLOB_READ_FAILURES.inc()
        logger.error("blob store failed while reading version %s: %s", version.id, exc)
        raise StorageUnavailable(
            N_("The document store did not answer; try again shortly."),
            headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
        ) from exc


def plan_content(
    *,
    runtime: Runtime,
    version: DocumentVersion,
    conditions: ReadConditions,
    disposition: str = "attachment",
) -> ContentPlan:
    """How to answer a read of ``version``: 304, 200 or 206, with the first piece pulled."""
    etag = f'"{version.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-store",
        "Content-Disposition": content_disposition(
            served_filename(version.filename, version.content_type), disposition
        ),
    }
    if conditions.not_modified(etag):
        return ContentPlan(status=304, headers=headers)
    if version.state == VersionState.CORRUPT:
        raise IntegrityFailure(N_("This version failed an earlier integrity check."))
    wanted = conditions.span(etag=etag, size=version.size)
    first, last = wanted if wanted is not None else (0, max(0, version.size - 1))
    full = wanted is None
    chunks = _guarded(
        runtime, version, iter_plaintext(runtime, version, first, last, verify_hash=full)
    )
    # Pull the first piece now so a missing, swapped or tampered blob is a clean error
    # response instead of a connection cut after a 200 status line.
    try:
        head = next(chunks)
    except StopIteration:
        head = b""
    headers["Content-Type"] = version.content_type
    headers["Content-Length"] = str(last - first + 1 if version.size else 0)
    if full:
        digest = base64.b64encode(bytes.fromhex(version.sha256)).decode()
        headers["Repr-Digest"] = f"sha-256=:{digest}:"
        status = 200
    else:
        headers["Content-Range"] = f"bytes {first}-{last}/{version.size}"
        status = 206

    def body() -> Iterator[bytes]:
        if head:
            yield head
        yield from chunks

    return ContentPlan(status=status, headers=headers, body=body())
