"""Completing a resumable upload: from its chunks to a document, through the one upload
use case every face shares; and refusing an upload for good.

The chunks are read back, authenticated, and their plaintext fed to
``documents.upload.upload``: the same type check, size limit, duplicate rule, one
transaction with the rows, the audit event and the jobs. That transaction also records
the last request's chunk and marks the upload complete, so the upload reaches its
length exactly when the document exists: a completion that fails, or dies with its
process, leaves the offset before the last request, and the client's retry sends
those bytes again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

from anyio import to_thread
from sqlalchemy import update
from sqlalchemy.orm import Session

from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.crypto.errors import CryptoError
from medvault.documents import upload as single_upload
from medvault.documents.models import Document, DocumentVersion
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.problems import IntegrityFailure, Problem
from medvault.runtime import Runtime
from medvault.uploads import repository, service
from medvault.uploads.lease import Lease
from medvault.uploads.models import Upload, UploadStatus
from medvault.uploads.protocol import ChecksumMismatch, UploadLocked
from medvault.uploads.staging import SealedChunk, chunk_plaintext

logger = logging.getLogger(__name__)


def delete_quietly(runtime: Runtime, key: str) -> None:
    try:
        runtime.blobs.delete(key)
    except Exception:  # unlisted, so the reconciler removes it after its grace period
        logger.warning("could not delete staged chunk %s", key)


def refuse(runtime: Runtime, upload_id: uuid.UUID, reason: str) -> None:
    """Refuse an upload for good: its chunks go, its row stays (410 with the reason)."""
    with runtime.clinical.session() as session:
        chunks = repository.chunks(session, upload_id)
        session.execute(
            update(Upload)
            .where(Upload.id == upload_id)
            .values(status=UploadStatus.REFUSED.value, refusal=reason, updated_at=utcnow())
        )
        repository.drop_chunks(session, upload_id)
        session.commit()
    service.discard_chunks(runtime, chunks)


async def complete(
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    upload: Upload,
    lease: Lease,
    *,
    expected_offset: int,
    final: SealedChunk | None,
    rewritten: SealedChunk | None,
    length: int,
) -> None:
    """Store the document from the recorded chunks and the last request's ``final`` one,
    which was not recorded (and replaces ``rewritten``, the small chunk it was made from).
    ``expected_offset``: where the recorded chunks end."""
    recorded = await to_thread.run_sync(_recorded_chunks, runtime, upload.id)
    if rewritten is not None:
        recorded = [chunk for chunk in recorded if chunk.id != rewritten.id]
    chunks = _tiled([*recorded, *([final] if final is not None else [])], length)
    fields = dict(upload.fields)
    declared = fields.pop("sha256", None)

    def mark_complete(session: Session, document: Document, version: DocumentVersion) -> None:
        now = utcnow()
        marked = session.execute(
            update(Upload)
            .where(
                Upload.id == upload.id,
                Upload.lock_token == lease.token,
                Upload.status == UploadStatus.RECEIVING.value,
                Upload.offset == expected_offset,
            )
            .values(
                status=UploadStatus.COMPLETE.value,
                offset=length,
                length=length,
                content_type=version.content_type,
                result_document_id=document.id,
                result_version=version.version,
                updated_at=now,
                expires_at=service.expiry(runtime, now),
            )
        )
        if not marked.rowcount:  # type: ignore[attr-defined]
            raise UploadLocked(N_("This upload was completed or taken over meanwhile."))

    try:
        await single_upload.upload(
            runtime=runtime,
            principal=principal,
            context=context,
            body=_plaintext(runtime, chunks, declared),
            content_type="application/octet-stream",
            content_length=length,
            query=fields,
            document_id=upload.document_id,
            on_commit=mark_complete,
        )
    except BaseException as error:
        # The final chunk was never recorded: the client sends those bytes again (or,
        # when the upload is refused for good, nothing more).
        if final is not None:
            await asyncio.shield(to_thread.run_sync(delete_quietly, runtime, final.storage_key))
        if (
            isinstance(error, Problem)
            and error.status < 500
            and not isinstance(error, UploadLocked)
        ):
            await to_thread.run_sync(refuse, runtime, upload.id, error.slug)
        raise
    leftovers = [*chunks, *([rewritten] if rewritten is not None else [])]
    try:
        await to_thread.run_sync(_forget_chunks, runtime, upload.id, leftovers)
    except Exception:  # the document is safe; the reconciler removes what is left
        logger.warning("could not remove the chunks of completed upload %s", upload.id)


def _recorded_chunks(runtime: Runtime, upload_id: uuid.UUID) -> list[SealedChunk]:
    with runtime.clinical.read_session() as session:
        return repository.chunks(session, upload_id)


def _tiled(chunks: list[SealedChunk], length: int) -> list[SealedChunk]:
    """``chunks``, checked to cover bytes 0..length exactly, in order."""
    position = 0
    for chunk in chunks:
        if chunk.offset != position:
            raise IntegrityFailure(N_("This upload's stored parts do not line up."))
        position += chunk.size
    if position != length:
        raise IntegrityFailure(N_("This upload's stored parts do not add up to its length."))
    return chunks


async def _plaintext(
    runtime: Runtime, chunks: list[SealedChunk], declared_sha256: str | None
) -> AsyncIterator[bytes]:
    """The upload's bytes, chunk by chunk, each segment authenticated before use; and,
    when the client declared the file's SHA-256 (metadata ``sha256``), checked against it
    before the upload can commit."""
    digest = hashlib.sha256() if declared_sha256 is not None else None
    for chunk in chunks:
        pieces: Iterator[bytes] = chunk_plaintext(runtime, chunk)
        while True:
            try:
                piece = await to_thread.run_sync(next, pieces, None)
            except CryptoError as exc:
                logger.error("INTEGRITY ALARM: staged chunk %s: %s", chunk.id, exc)
                raise IntegrityFailure(
                    N_("A stored part of this upload failed its check.")
                ) from None
            if piece is None:
                break
            if digest is not None:
                digest.update(piece)
            yield piece
    if digest is not None and digest.hexdigest() != declared_sha256:
        raise ChecksumMismatch(N_("The file's SHA-256 does not match the sha256 metadata."))


def _forget_chunks(runtime: Runtime, upload_id: uuid.UUID, chunks: list[SealedChunk]) -> None:
    with runtime.clinical.session() as session:
        repository.drop_chunks(session, upload_id)
        session.commit()
    service.discard_chunks(runtime, chunks)
