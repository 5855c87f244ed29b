"""Copy every blob from one store to another, resumably, and prove the copy.

``medvault storage migrate --to URI`` runs this: a folder or MinIO to Azure, S3 to a
folder, any store to any other. Blobs are encrypted envelopes already, so their
stored bytes are copied as they are; nothing is decrypted and no key is needed.

**Resumable** because stores commit atomically: a key that exists at the target
holds a whole blob (a copy that was interrupted left at most uncommitted leftovers,
which the target's sweep or its own expiry removes, never a partial blob under the
key). So a rerun skips keys the target has and copies the rest.

**Verified**: each copied blob is read back from the target and its SHA-256 compared
with the one computed while its source bytes streamed past; a blob the target had
already is compared by streaming both. Keys are immutable, so a target blob that
differs is never overwritten: it is reported, and the command exits non-zero.

Memory stays flat: one store chunk per thread in flight, and the target's listing
(key and size, about 150 bytes per blob) to know what it holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from medvault.kit.parallel import run_parallel
from medvault.storage.base import BlobExists, BlobInfo, BlobNotFound, BlobStore, BlobWriter

DEFAULT_PARALLEL = 8


class Outcome(StrEnum):
    COPIED = "copied"
    PRESENT = "present"  # the target had it already, verified equal (or trusted)
    VANISHED = "vanished"  # deleted at the source after it was listed
    MISMATCH = "mismatch"


@dataclass(frozen=True)
class BlobResult:
    key: str
    outcome: Outcome
    size: int = 0
    reason: str | None = None


@dataclass
class MigrationReport:
    copied: int = 0
    copied_bytes: int = 0
    present: int = 0
    vanished: int = 0
    mismatches: list[BlobResult] = field(default_factory=list)
    target_only: int = 0
    """Blobs at the target that the source does not hold (a vault already writing there)."""

    def add(self, result: BlobResult) -> None:
        if result.outcome is Outcome.COPIED:
            self.copied += 1
            self.copied_bytes += result.size
        elif result.outcome is Outcome.PRESENT:
            self.present += 1
        elif result.outcome is Outcome.VANISHED:
            self.vanished += 1
        else:
            self.mismatches.append(result)


class MigrationObserver:
    """Sees each blob's result as it is decided; the CLI draws progress from it."""

    def listed_target(self, count: int) -> None:
        """The target's listing is read: it holds ``count`` blobs."""

    def blob_done(self, result: BlobResult) -> None:
        """One source blob is copied, found present, vanished or mismatched."""


def _sha256(chunks: Iterator[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class _Migration:
    def __init__(self, source: BlobStore, target: BlobStore, *, verify_existing: bool) -> None:
        self._source = source
        self._target = target
        self._verify_existing = verify_existing

    def _compare(self, blob: BlobInfo, target_size: int) -> BlobResult:
        """A key both stores hold: equal size and, unless trusted, equal SHA-256."""
        if target_size != blob.size:
            reason = f"target holds {target_size} bytes, source {blob.size}"
            return BlobResult(blob.key, Outcome.MISMATCH, blob.size, reason)
        if not self._verify_existing:
            return BlobResult(blob.key, Outcome.PRESENT, blob.size)
        try:
            source_digest, _ = _sha256(self._source.read(blob.key))
        except BlobNotFound:
            return BlobResult(blob.key, Outcome.VANISHED)
        try:
            target_digest, seen = _sha256(self._target.read(blob.key))
        except BlobNotFound:
            return BlobResult(blob.key, Outcome.MISMATCH, blob.size, "missing at the target")
        if (target_digest, seen) != (source_digest, blob.size):
            return BlobResult(blob.key, Outcome.MISMATCH, blob.size, "SHA-256 differs")
        return BlobResult(blob.key, Outcome.PRESENT, blob.size)

    def _copy(self, blob: BlobInfo) -> BlobResult:
        try:
            writer: BlobWriter = self._target.writer(blob.key)
        except BlobExists:
            # Written since the target was listed (an earlier run still going?): compare.
            return self._compare(blob, blob.size)
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in self._source.read(blob.key):
                digest.update(chunk)
                size += len(chunk)
                writer.write(chunk)
            writer.commit()
        except BlobNotFound:
            writer.abort()
            return BlobResult(blob.key, Outcome.VANISHED)
        except BaseException:
            writer.abort()
            raise
        # Read back what the target stored: the proof is the target's bytes, not ours.
        try:
            stored, stored_size = _sha256(self._target.read(blob.key))
        except BlobNotFound:
            return BlobResult(blob.key, Outcome.MISMATCH, size, "missing at the target after copy")
        if (stored, stored_size) != (digest.hexdigest(), size):
            return BlobResult(blob.key, Outcome.MISMATCH, size, "SHA-256 differs after copy")
        return BlobResult(blob.key, Outcome.COPIED, size)

    def one(self, item: tuple[BlobInfo, int | None]) -> BlobResult:
        blob, target_size = item
        if target_size is None:
            return self._copy(blob)
        return self._compare(blob, target_size)


def migrate_blobs(
    *,
    source: BlobStore,
    target: BlobStore,
    parallel: int = DEFAULT_PARALLEL,
    verify_existing: bool = True,
    observer: MigrationObserver | None = None,
) -> MigrationReport:
    """Copy what ``target`` lacks from ``source`` and verify every blob; see the module.

    ``verify_existing=False`` trusts a blob the target already holds with the same size
    (a final pass right after a verified one, to keep a switch-over short).
    """
    observer = observer or MigrationObserver()
    held = {blob.key: blob.size for blob in target.list_blobs()}
    observer.listed_target(len(held))
    report = MigrationReport()
    migration = _Migration(source, target, verify_existing=verify_existing)

    def work() -> Iterator[tuple[BlobInfo, int | None]]:
        # Popping as the source listing streams leaves exactly the target-only keys.
        for blob in source.list_blobs():
            yield blob, held.pop(blob.key, None)

    for result in run_parallel(migration.one, work(), parallel=parallel, thread_name="migrate"):
        report.add(result)
        observer.blob_done(result)
    report.target_only = len(held)
    return report
