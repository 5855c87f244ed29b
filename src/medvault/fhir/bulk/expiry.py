"""Expiring exports: past ``MEDVAULT_BULK_EXPORT_TTL_SECONDS`` their files are deleted.

The status route already answers 404 for an export past its time; this periodic job
removes the rows' files and the blobs, then sweeps ``fhir-exports/`` for blobs no row
names (a job that crashed between making its files durable and recording them), once
they are older than the reconciler's grace period, so a running export is never hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.fhir.bulk import repository
from medvault.fhir.bulk.models import ExportState
from medvault.fhir.bulk.ndjson import BLOB_PREFIX
from medvault.fhir.bulk.service import delete_blobs, discard
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime

BATCH = 100


@dataclass
class ExpiryReport:
    expired: int = 0
    files: int = 0
    orphans: int = 0

    def summary(self) -> dict[str, int]:
        return {"expired": self.expired, "files": self.files, "orphans": self.orphans}


def expire_exports(
    runtime: Runtime, *, grace_seconds: float, now: datetime | None = None
) -> ExpiryReport:
    """Expire every export past its time and delete its files; then sweep orphans."""
    now = now or utcnow()
    report = ExpiryReport()
    while True:
        with runtime.clinical.session() as session:
            exports = repository.expired_exports(session, now, BATCH)
            if not exports:
                break
            keys: list[str] = []
            for export in exports:
                keys += discard(session, export, ExportState.EXPIRED)
            audit.record(
                session=session,
                context=AuditContext.system("bulk-export-expiry"),
                action="fhir.bulk_export.expire",
                resource_type="BulkExport",
                details={"exports": [str(e.id) for e in exports], "files": len(keys)},
            )
            session.commit()
        delete_blobs(runtime.blobs, keys)
        report.expired += len(exports)
        report.files += len(keys)
    cutoff = now - timedelta(seconds=grace_seconds)
    for blob in runtime.blobs.list_blobs(BLOB_PREFIX):
        if blob.modified >= cutoff:
            continue
        with runtime.clinical.read_session() as session:
            if repository.is_export_blob(session, blob.key):
                continue
        runtime.blobs.delete(blob.key)
        report.orphans += 1
    return report
