"""The single pass that turns an incoming plaintext stream into a stored, encrypted blob.

Each chunk is counted against the size limit, hashed (SHA-256 of the plaintext, and
SHA-1 for FHIR's ``Attachment.hash`` when the caller must check a declared one),
encrypted into envelope segments and handed to the blob writer. Nothing is buffered
beyond one batch, so memory stays flat whatever the file size, and no plaintext byte
reaches the blob store.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from anyio import to_thread

from medvault.crypto.envelope import EnvelopeWriter
from medvault.crypto.keyring import new_dek
from medvault.documents.sniffing import SNIFF_BYTES, sniff_content_type
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_, msg
from medvault.kit.problems import BadRequest, PayloadTooLarge, UnsupportedMediaType
from medvault.runtime import Runtime
from medvault.storage.base import BlobWriter

# Work is handed to a thread in batches this large: big enough that the thread hop
# is negligible, small enough to keep memory flat.
BATCH_BYTES = 1024 * 1024

# SHA-256 is the costliest step per byte (~2 GB/s with SHA-NI, AES-GCM is ~7 GB/s).
# Batches at least this big are hashed in parallel with their encryption; smaller
# ones (small files) are hashed inline, where a thread hop would cost more than it saves.
HASH_AHEAD_BYTES = 256 * 1024
_HASHERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="medvault-sha256")


class EmptyFile(BadRequest):
    slug, title = "empty-file", N_("The uploaded file is empty")


def accepted_type(head: bytes, allowed_types: tuple[str, ...]) -> str:
    """The type the file's first bytes show, or 415 unless it is one of ``allowed_types``.

    Magic bytes, not the client's Content-Type: resumable uploads decide with this too.
    """
    sniffed = sniff_content_type(head)
    if sniffed is None or sniffed not in allowed_types:
        shown = sniffed or msg("an unrecognised format")
        raise UnsupportedMediaType(
            msg(
                "The file content is {shown}; accepted types are {types}.",
                shown=shown,
                types=", ".join(allowed_types),
            ),
            allowed_types=list(allowed_types),
        )
    return sniffed


# Every version blob lives under this prefix; other blobs in the store are not versions.
VERSION_BLOB_PREFIX = "versions/"


def storage_key_for(version_id: uuid.UUID) -> str:
    """Immutable key per version; the fan-out keeps directories small on filesystems."""
    return f"{VERSION_BLOB_PREFIX}{version_id.hex[:2]}/{version_id}"


@dataclass(frozen=True)
class IngestResult:
    version_id: uuid.UUID
    storage_key: str
    content_type: str
    size: int
    sha256: str
    kek_id: str
    wrapped_dek: bytes
    # When the blob was started: an upload must commit within half the reconciler's
    # grace period of this (documents.arrival).
    started_at: datetime
    # FHIR R4 defines Attachment.hash as SHA-1. Only computed here when a FHIR client
    # may declare one that must be checked before the commit; otherwise a job after the
    # commit fills it in (fhir.hashing), off the upload's hot path.
    sha1: str | None = None

    @property
    def id(self) -> uuid.UUID:
        """The blob's id (its envelope's associated data), so a result opens like any
        sealed blob (``documents.content.Sealed``) before its row exists."""
        return self.version_id


class IngestPipeline:
    def __init__(
        self, *, runtime: Runtime, version_id: uuid.UUID | None = None, sha1: bool = False
    ) -> None:
        self._runtime = runtime
        self.started_at = utcnow()
        settings = runtime.settings
        self.version_id = version_id or uuid.uuid4()
        self.storage_key = storage_key_for(self.version_id)
        self.max_bytes = settings.max_upload_bytes
        self.allowed_types = settings.allowed_types
        dek = new_dek()
        self._wrapped = runtime.current_keyring().wrap_dek(dek, version_id=self.version_id)
        self._envelope = EnvelopeWriter(
            dek=dek,
            version_id=self.version_id,
            segment_size=settings.segment_size,
        )
        self._sha = hashlib.sha256()
        # Not a security hash here: only FHIR's Attachment.hash, which R4 fixes as SHA-1.
        # Measured (bench/large_files.py): a second hash over every byte cost raw uploads
        # up to 40% of their throughput, so only callers that must check a declared hash
        # before committing ask for it.
        self._sha1 = hashlib.sha1(usedforsecurity=False) if sha1 else None
        self._head: bytearray | None = bytearray()
        self._writer: BlobWriter | None = None
        self.content_type: str | None = None
        self.size = 0
        self.committed = False

    def check_size(self, incoming: int) -> None:
        self.check_size_total(self.size + incoming)

    def check_size_total(self, total: int) -> None:
        """Refuse once ``total`` bytes received so far exceed the limit."""
        if total > self.max_bytes:
            raise PayloadTooLarge(
                msg("The file is larger than the limit of {limit} bytes.", limit=self.max_bytes),
                max_bytes=self.max_bytes,
            )

    def _decide_type(self, head: bytes) -> None:
        self.content_type = accepted_type(head, self.allowed_types)
        # The blob is only started once the type is accepted: rejected files touch no storage.
        self._writer = self._runtime.blobs.writer(self.storage_key)
        self._writer.write(self._envelope.header_bytes())

    def feed(self, data: bytes | memoryview) -> None:
        """Hash, encrypt and write ``data``; it is consumed before this returns.

        ``data`` may be a view of a buffer the caller refills afterwards (``pump``
        does): nothing here keeps a reference to it.
        """
        self.check_size(len(data))
        self.size += len(data)
        # A big batch is hashed on a helper thread while this one encrypts and writes
        # it; hashlib drops the GIL, so the two run on separate cores (1 GiB raw upload:
        # 692 -> 806 MB/s). The hash is awaited before returning, so updates stay in
        # order and never overlap.
        # SHA-1 gets its own helper job, so the two digests run side by side rather than
        # doubling the time a batch waits for its hashes.
        hashes = [self._sha] if self._sha1 is None else [self._sha, self._sha1]
        hashing = (
            [_HASHERS.submit(digest.update, data) for digest in hashes]
            if len(data) >= HASH_AHEAD_BYTES
            else None
        )
        try:
            if hashing is None:
                for digest in hashes:
                    digest.update(data)
            if self._head is not None:
                self._head += data
                if len(self._head) < SNIFF_BYTES:
                    return
                data, self._head = bytes(self._head), None
                self._decide_type(data)
            assert self._writer is not None
            self._writer.write(self._envelope.update_view(data))
        finally:
            if hashing is not None:
                for job in hashing:
                    job.result()

    def finish(self) -> IngestResult:
        """Seal the last segment and make the blob durable under its final key."""
        if self._head is not None:
            if not self._head:
                raise EmptyFile(N_("Send a non-empty file."))
            head, self._head = bytes(self._head), None
            self._decide_type(head)
            assert self._writer is not None
            self._writer.write(self._envelope.update_view(head))
        assert self._writer is not None and self.content_type is not None
        self._writer.write(self._envelope.finalize())
        self._writer.commit()
        self.committed = True
        return IngestResult(
            version_id=self.version_id,
            storage_key=self.storage_key,
            content_type=self.content_type,
            size=self.size,
            sha256=self._sha.hexdigest(),
            kek_id=self._wrapped.kek_id,
            wrapped_dek=self._wrapped.wrapped,
            started_at=self.started_at,
            sha1=self._sha1.hexdigest() if self._sha1 is not None else None,
        )

    def discard(self) -> None:
        """Remove every trace of this upload: abort an open writer or delete a committed blob."""
        if self._writer is None:
            return
        if self.committed:
            self._runtime.blobs.delete(self.storage_key)
        else:
            self._writer.abort()


async def pump(chunks: AsyncIterator[bytes], pipeline: IngestPipeline) -> None:
    """Feed an async byte stream through the pipeline in thread-pool batches.

    Receiving and processing overlap: while a worker thread hashes, encrypts and
    writes one batch, the event loop gathers the next. Batches are still fed one at
    a time and in order (a batch starts only after the previous one finished), so at
    most two batches are in memory. On a 1 GiB raw upload (bench/large_files.py, 2
    cores) this alone moved the median from 635 to 692 MB/s.

    The two batches are the same two buffers for the whole upload, refilled in turn:
    a fresh 1 MiB buffer per batch went back to the kernel when freed, so its pages
    faulted in again every time (see ``EnvelopeWriter.update_view``).
    """
    buffers = (bytearray(BATCH_BYTES), bytearray(BATCH_BYTES))
    current = fill = received = 0
    inflight: asyncio.Task[None] | None = None
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            received += len(chunk)
            # Checked per chunk, not per batch, so an oversized upload stops at once.
            pipeline.check_size_total(received)
            view = memoryview(chunk)
            while view:
                take = min(len(view), BATCH_BYTES - fill)
                buffers[current][fill : fill + take] = view[:take]
                fill, view = fill + take, view[take:]
                if fill < BATCH_BYTES:
                    continue
                if inflight is not None:
                    # Shielded: a cancelled upload must not cancel a write mid-flight;
                    # the finally clause waits for it instead. Awaited before the
                    # next batch starts, which is also what frees the other buffer.
                    await asyncio.shield(inflight)
                batch = memoryview(buffers[current])
                inflight = asyncio.ensure_future(to_thread.run_sync(pipeline.feed, batch))
                current, fill = current ^ 1, 0
        if inflight is not None:
            await asyncio.shield(inflight)
            inflight = None
        if fill:
            await to_thread.run_sync(pipeline.feed, memoryview(buffers[current])[:fill])
    finally:
        if inflight is not None:
            await _settle(inflight)


async def _settle(task: asyncio.Task[None]) -> None:
    """Wait until a feed running in a worker thread has finished, even when cancelled.

    The caller discards the blob after an error; doing so while a thread is still
    writing into it would race. This keeps the guarantee the plain ``await
    to_thread.run_sync(...)`` gives: no feed outlives ``pump``.
    """
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if not task.cancelled():
        task.exception()  # retrieved: the error that matters is already propagating
    if cancelled:
        raise asyncio.CancelledError
