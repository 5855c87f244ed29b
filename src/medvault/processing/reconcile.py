"""The reconciler: removes what failures leave behind, and never what is still in use.

What it removes:
- blobs under the version prefix that no version row points to (a crash between the
  blob becoming durable and the row committing), once older than the grace period;
- likewise blobs under ``derived/`` (previews, extracted text) that no artifact row
  points to: the preview and text jobs follow the same order and the same deadline;
- writes that never committed: S3 multipart uploads, temp files on a filesystem;
- resumable uploads that expired, with their encrypted chunks and any multipart upload
  a crashed request left open for them, and chunks no upload lists (``uploads.expiry``).

Why it cannot delete a blob an upload still needs: an upload refuses to commit its row
when its blob was started more than half the grace period ago (``upload_deadline``).
A blob the reconciler deletes is older than the whole grace period, so any upload
that could still commit it committed at least half a grace period before the
reconciler looked, and the reconciler sees its row. Clocks between hosts need only
agree to within half the grace period (12 hours by default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.documents import derived
from medvault.documents.integrity import find_orphans, is_version_blob
from medvault.kit.clock import utcnow
from medvault.processing import kinds
from medvault.runtime import Runtime
from medvault.uploads.expiry import expire_uploads

logger = logging.getLogger("medvault.processing.reconcile")

RECONCILE_JOB = kinds.RECONCILE
RECONCILED = Counter(
    "medvault_reconciled_total", "Leftovers the reconciler removed, by kind", ["kind"]
)


@dataclass
class ReconcileReport:
    dry_run: bool
    orphan_blobs: int = 0
    orphan_bytes: int = 0
    incomplete_writes: int = 0
    # Orphans too young to remove: uploads in flight, or crashes inside the grace period.
    young_orphans: int = 0
    # Resumable uploads: unfinished ones that expired, finished ones kept for HEAD.
    expired_uploads: int = 0
    finished_uploads: int = 0

    def summary(self) -> dict[str, int | bool]:
        return {
            "dry_run": self.dry_run,
            "orphan_blobs": self.orphan_blobs,
            "orphan_bytes": self.orphan_bytes,
            "incomplete_writes": self.incomplete_writes,
            "young_orphans": self.young_orphans,
            "expired_uploads": self.expired_uploads,
            "finished_uploads": self.finished_uploads,
        }


def upload_deadline(grace_seconds: float) -> timedelta:
    """How long after its blob was started an upload may still commit (see module doc)."""
    return timedelta(seconds=grace_seconds / 2)


def reconcile(runtime: Runtime, *, grace_seconds: float, dry_run: bool = False) -> ReconcileReport:
    report = ReconcileReport(dry_run=dry_run)
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    for orphan in find_orphans(runtime=runtime):
        blob = orphan.blob
        if blob.modified >= cutoff:
            report.young_orphans += 1
            continue
        if not dry_run:
            # Look once more, just before deleting: find_orphans works in batches.
            with runtime.clinical.read_session() as session:
                if is_version_blob(session, blob.key):
                    continue
            runtime.blobs.delete(blob.key)
        report.orphan_blobs += 1
        report.orphan_bytes += blob.size
    _remove_derived_orphans(runtime, report, cutoff=cutoff, dry_run=dry_run)
    report.incomplete_writes = runtime.blobs.sweep_incomplete(
        older_than_seconds=grace_seconds, dry_run=dry_run
    )
    uploads = expire_uploads(runtime, grace_seconds=grace_seconds, dry_run=dry_run)
    report.expired_uploads = uploads.expired_uploads
    report.finished_uploads = uploads.finished_forgotten
    report.orphan_blobs += uploads.removed_blobs
    report.orphan_bytes += uploads.removed_bytes
    report.incomplete_writes += uploads.incomplete_writes
    return report


def _remove_derived_orphans(
    runtime: Runtime, report: ReconcileReport, *, cutoff: datetime, dry_run: bool
) -> None:
    for blob in runtime.blobs.list_blobs(derived.DERIVED_BLOB_PREFIX):
        # One short read session per blob, the last look before deleting; derived
        # blobs are few next to versions (two or three per version, a few KiB each).
        with runtime.clinical.read_session() as session:
            referenced = derived.is_derived_blob(session, blob.key)
        if referenced:
            continue
        if blob.modified >= cutoff:
            report.young_orphans += 1
            continue
        if not dry_run:
            runtime.blobs.delete(blob.key)
        report.orphan_blobs += 1
        report.orphan_bytes += blob.size


def record_report(runtime: Runtime, report: ReconcileReport, *, actor: str) -> None:
    """Metrics, a log line and one summary audit event (no event for an idle run)."""
    if not report.dry_run:
        RECONCILED.labels("orphan_blob").inc(report.orphan_blobs)
        RECONCILED.labels("incomplete_write").inc(report.incomplete_writes)
        RECONCILED.labels("expired_upload").inc(report.expired_uploads)
    removed = report.orphan_blobs + report.incomplete_writes + report.expired_uploads
    logger.info("reconcile%s: %s", " (dry run)" if report.dry_run else "", report.summary())
    if removed == 0 or report.dry_run:
        return
    with runtime.clinical.session() as session:
        audit.record(
            session=session,
            context=AuditContext.system(actor),
            action="storage.reconcile",
            details=dict(report.summary()),
        )
        session.commit()
