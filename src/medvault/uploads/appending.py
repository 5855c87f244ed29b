"""PATCH: append bytes to a resumable upload; the last ones complete it (``completion``).

One request at a time per upload: the request holds the upload's lease (``lease``) for
as long as it appends or completes, renewing it as it goes. Bytes are encrypted into a
chunk as they arrive (``staging.ChunkWriter``); the chunk is sealed and recorded,
together with the new offset, in one compare-and-set on (offset, lease). So the offset
never counts a byte that is not durable, and a request whose lease ran out (its process
stalled, another took over) records nothing.

A long request records a chunk every ``MEDVAULT_UPLOAD_CHECKPOINT_BYTES``, so a crash
loses at most that much. A client gone mid-request keeps what arrived (tus: resume from
HEAD), unless it sent a checksum, which can then not be checked: that request keeps
nothing. The request that brings the last byte seals its chunk without recording it:
the document's own transaction does (``completion.complete``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from anyio import to_thread
from sqlalchemy import update

from medvault.access.denials import audited_attempt
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents.ingest import accepted_type
from medvault.documents.sniffing import SNIFF_BYTES
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_, msg
from medvault.kit.problems import (
    ClientGone,
    PayloadTooLarge,
    Problem,
)
from medvault.runtime import Runtime
from medvault.uploads import repository, service
from medvault.uploads.completion import complete, delete_quietly, refuse
from medvault.uploads.lease import Lease
from medvault.uploads.models import Upload, UploadStatus
from medvault.uploads.protocol import (
    BadUploadHeader,
    Checksum,
    ChecksumMismatch,
    OffsetMismatch,
    UploadLocked,
    parse_checksum,
    parse_size,
)
from medvault.uploads.service import UploadView
from medvault.uploads.staging import ChunkWriter, SealedChunk, chunk_plaintext

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
# A last chunk smaller than this is rewritten together with the next request's bytes,
# so a client sending tiny requests leaves few chunks (each is a blob and a row).
MERGE_BELOW = 1 * MiB
# Received bytes go to a worker thread (hash, encrypt, write) in batches this large.
BATCH_BYTES = 1 * MiB


@dataclass
class _Append:
    """One request's bytes on their way into chunks (methods run on a worker thread)."""

    runtime: Runtime
    context: AuditContext
    upload: Upload
    lease: Lease
    checksum: Checksum | None
    length: int | None  # the upload's length, once known
    set_length: bool  # this request declares the length (creation-defer-length)
    merge: SealedChunk | None = None  # the small last chunk to rewrite with new bytes
    merge_seq: int | None = None
    head: bytearray | None = None  # the file's first bytes, until its type is known

    def __post_init__(self) -> None:
        self.offset = self.upload.offset  # recorded so far
        self.received = 0  # this request's bytes
        self.writer: ChunkWriter | None = None
        self.digest = self.checksum.hasher() if self.checksum is not None else None
        self.content_type = self.upload.content_type
        self.checkpoint = self.runtime.settings.upload_checkpoint_bytes
        self.expires_at = self.upload.expires_at

    def prepare(self) -> None:
        """Read what the request needs from earlier ones: the head, the chunk to merge."""
        with self.runtime.clinical.read_session() as session:
            last = repository.last_chunk(session, self.upload.id)
            if last is not None and last[1].size < MERGE_BELOW:
                self.merge_seq, self.merge = last
            chunks = repository.chunks(session, self.upload.id) if self.content_type is None else []
        if self.content_type is None:
            self.head = bytearray()
            for chunk in chunks:
                for piece in chunk_plaintext(self.runtime, chunk):
                    self.head += piece[: SNIFF_BYTES - len(self.head)]
                    if len(self.head) >= SNIFF_BYTES:
                        break

    def _start(self) -> ChunkWriter:
        merge = self.merge
        writer = ChunkWriter(
            self.runtime, self.upload.id, offset=self.offset if merge is None else merge.offset
        )
        if merge is not None:
            # A fresh key for the rewritten chunk: its old blob goes once this one is
            # recorded. The bytes cross this process only, decrypted and re-encrypted.
            for piece in chunk_plaintext(self.runtime, merge):
                writer.feed(piece)
        return writer

    def feed(self, data: bytes | memoryview) -> None:
        if self.digest is not None:
            self.digest.update(data)
        if self.head is not None:
            self.head += data[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self.decide_type()
        if self.writer is None:
            self.writer = self._start()
        self.writer.feed(data)
        if self.checksum is None and self.writer.size >= self.checkpoint:
            self.record()

    def decide_type(self) -> None:
        if self.head is None or not self.head:
            return
        self.content_type = accepted_type(bytes(self.head), self.runtime.settings.allowed_types)
        self.head = None

    def record(self, last: bool = False) -> None:
        """Seal the chunk and record it with the new offset, or discard it. The
        request's ``last`` record also releases the lease, in the same commit."""
        writer = self.writer
        if writer is None:
            return
        chunk = writer.seal()
        now = utcnow()
        self.expires_at = service.expiry(self.runtime, now)
        values: dict[str, object] = {
            "content_type": self.content_type,
            "updated_at": now,
            "expires_at": self.expires_at,
        }
        if self.set_length:
            values["length"] = self.length
        if last:
            values.update(self.lease.release_values())
        try:
            with self.runtime.clinical.session() as session:
                recorded = repository.record_chunk(
                    session,
                    self.upload.id,
                    self.lease.token,
                    chunk,
                    expected_offset=self.offset,
                    replaces=self.merge_seq,
                    values=values,
                )
                if recorded:
                    # Bytes added to what will be the patient's record: audited with them.
                    audit.record(
                        session=session,
                        context=self.context,
                        action="upload.append",
                        resource_type="Upload",
                        resource_id=self.upload.id,
                        patient_id=self.upload.patient_id,
                        details={
                            "offset": self.offset,
                            "size": chunk.offset + chunk.size - self.offset,
                        },
                    )
                session.commit()
        except Exception:
            # Unknown outcome: keep the blob. If the row exists it is needed; if not,
            # the reconciler removes the unreferenced blob.
            self.writer = None
            raise
        if not recorded:
            writer.discard()
            self.writer = None
            raise UploadLocked(N_("This request lost the upload to another; resume from HEAD."))
        self.lease.released = last
        if self.merge is not None:
            delete_quietly(self.runtime, self.merge.storage_key)
        self.offset = chunk.offset + chunk.size
        self.set_length = False
        self.writer, self.merge, self.merge_seq = None, None, None

    def seal_final(self) -> SealedChunk | None:
        """Seal the request's last chunk without recording it: the transaction that
        stores the document records it (``_complete``), so the upload reaches its length
        exactly when the document exists, and a completion that fails (or a process
        killed during it) leaves the offset before these bytes, for the client to send
        again."""
        if self.writer is None:
            return None
        return self.writer.seal()

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.discard()
            self.writer = None


async def append(
    *,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    upload_id: str,
    offset: str | None,
    length: str | None,
    checksum: str | None,
    content_length: int | None,
    body: AsyncIterator[bytes],
) -> UploadView:
    """Append the request's bytes. The headers are parsed once the upload is known to be
    the caller's: a stranger learns nothing, not even which of its headers were wrong."""
    upload = await to_thread.run_sync(service.load, runtime, principal, upload_id)
    service.check_open(upload, utcnow())
    at = parse_size("Upload-Offset", offset)
    if at is None:
        raise BadUploadHeader(N_("Send Upload-Offset with every PATCH."))
    declared = parse_size("Upload-Length", length)
    expected = parse_checksum(checksum)
    with audited_attempt(service.attempt_on(principal, upload)):
        # Authorised again, as at creation: a patient may have left the care team since.
        target = service.target_of(runtime, principal, upload)
        await to_thread.run_sync(target.precheck, target.validate(upload.fields))
        if upload.status == UploadStatus.COMPLETE.value:
            if at == upload.offset and not content_length:
                return UploadView.of(upload)  # the final request, retried
            raise OffsetMismatch(
                msg("The upload is complete at {offset} bytes.", offset=upload.offset)
            )
        async with Lease(runtime, upload.id) as lease:
            return await _append_holding(
                runtime, principal, context, lease, at, declared, expected, content_length, body
            )


async def _append_holding(
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    lease: Lease,
    offset: int,
    length: int | None,
    checksum: Checksum | None,
    content_length: int | None,
    body: AsyncIterator[bytes],
) -> UploadView:
    upload = lease.upload
    assert upload is not None
    service.check_open(upload, utcnow())
    if offset != upload.offset:
        raise OffsetMismatch(msg("The upload stands at {offset} bytes.", offset=upload.offset))
    total, set_length = _length(runtime, upload, length)
    if total is not None and content_length is not None and offset + content_length > total:
        raise PayloadTooLarge(
            msg(
                "This request would take the upload past its length of {length} bytes.",
                length=total,
            )
        )
    work = _Append(runtime, context, upload, lease, checksum, total, set_length)
    await to_thread.run_sync(work.prepare)
    try:
        await _receive(work, body)
    except ClientGone:
        if checksum is None:
            await to_thread.run_sync(work.record, True)
        raise
    except Problem as problem:
        await to_thread.run_sync(work.discard)
        if _refuses_for_good(problem):
            await to_thread.run_sync(refuse, runtime, upload.id, problem.slug)
        raise
    except BaseException:
        await asyncio.shield(to_thread.run_sync(work.discard))
        raise
    if work.digest is not None and checksum is not None and work.digest.digest() != checksum.digest:
        await to_thread.run_sync(work.discard)
        raise ChecksumMismatch(N_("The bytes of this request do not match Upload-Checksum."))
    if total is None or upload.offset + work.received < total:
        await to_thread.run_sync(work.record, True)
        if set_length and work.received == 0:
            await to_thread.run_sync(_set_length, runtime, upload.id, lease.token, total)
        # What the record just wrote; no need to read it back.
        return replace(
            UploadView.of(upload), offset=work.offset, length=total, expires_at=work.expires_at
        )
    # The last bytes: the document's transaction records them (see ``seal_final``).
    await to_thread.run_sync(work.decide_type)  # a file shorter than the sniffed head
    final = await to_thread.run_sync(work.seal_final)
    rewritten = work.merge if final is not None else None
    await complete(
        runtime,
        principal,
        context,
        upload,
        lease,
        expected_offset=work.offset,
        final=final,
        rewritten=rewritten,
        length=total,
    )
    return UploadView.of(await to_thread.run_sync(_reload, runtime, upload.id))


async def _receive(work: _Append, body: AsyncIterator[bytes]) -> None:
    batch = bytearray()
    limit = work.runtime.settings.max_upload_bytes
    start = work.upload.offset
    try:
        async for piece in body:
            work.received += len(piece)
            end = start + work.received
            if work.length is not None and end > work.length:
                raise _PastLength(
                    msg(
                        "This request went past the upload's length of {length} bytes.",
                        length=work.length,
                    )
                )
            if end > limit:
                raise PayloadTooLarge(
                    msg("The file is larger than the limit of {limit} bytes.", limit=limit),
                    max_bytes=limit,
                )
            batch += piece
            if len(batch) >= BATCH_BYTES:
                data, batch = bytes(batch), bytearray()
                await to_thread.run_sync(work.feed, data)
    except ClientGone:
        # What arrived before the client went is kept (the caller records it).
        if batch:
            await to_thread.run_sync(work.feed, bytes(batch))
        raise
    if batch:
        await to_thread.run_sync(work.feed, bytes(batch))


class _PastLength(PayloadTooLarge):
    """More bytes than Upload-Length: this request is refused, the upload goes on."""


def _refuses_for_good(problem: Problem) -> bool:
    """Whether the upload can never succeed after this (its type, or its size)."""
    if isinstance(problem, _PastLength):
        return False
    return problem.status in (413, 415)


def _length(runtime: Runtime, upload: Upload, declared: int | None) -> tuple[int | None, bool]:
    """The upload's length, and whether this request is the one that declares it."""
    if declared is None:
        return upload.length, False
    if upload.length is not None:
        if declared != upload.length:
            raise BadUploadHeader(N_("Upload-Length was set already and cannot change."))
        return upload.length, False
    if declared < upload.offset or declared == 0:
        raise BadUploadHeader(N_("Upload-Length is smaller than what was uploaded."))
    limit = runtime.settings.max_upload_bytes
    if declared > limit:
        raise PayloadTooLarge(
            msg("The file is larger than the limit of {limit} bytes.", limit=limit),
            max_bytes=limit,
        )
    return declared, True


def _reload(runtime: Runtime, upload_id: uuid.UUID) -> Upload:
    with runtime.clinical.read_session() as session:
        upload = repository.get(session, upload_id)
        if upload is None:
            raise OffsetMismatch(N_("This upload was ended meanwhile."))
        session.expunge(upload)
        return upload


def _set_length(
    runtime: Runtime, upload_id: uuid.UUID, token: uuid.UUID, length: int | None
) -> None:
    with runtime.clinical.session() as session:
        session.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.lock_token == token, Upload.length.is_(None))
            .values(length=length, updated_at=utcnow())
        )
        session.commit()
