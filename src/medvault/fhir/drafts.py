"""Expiring FHIR Binary drafts that no DocumentReference ever described.

``POST /fhir/Binary`` stores bytes first; a DocumentReference is meant to follow. A
client that crashes in between leaves a document nobody can find by its metadata.
After ``MEDVAULT_BINARY_DRAFT_TTL_SECONDS`` this periodic job deletes the draft the
way an administrator would: the document is marked deleted, its versions destroyed
(their bytes removed after the commit), and the audit log records why. The rows stay,
so the audit trail that mentions them still resolves.

Safe with many workers: each draft is handled in its own transaction that re-reads
and deletes the draft row, so a draft described meanwhile, or expired by another
worker, is skipped.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.documents import repository as documents
from medvault.documents.models import Document, DocumentStatus, VersionState
from medvault.documents.quarantine import discard_blob
from medvault.fhir import repository
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime

logger = logging.getLogger(__name__)

ACTOR = "fhir-draft-expiry"
BATCH = 100


@dataclass
class ExpiryReport:
    expired: int = 0
    blobs: list[str] = field(default_factory=list)


def expire_drafts(runtime: Runtime, *, ttl_seconds: float, dry_run: bool = False) -> ExpiryReport:
    report = ExpiryReport()
    cutoff = utcnow() - timedelta(seconds=ttl_seconds)
    while True:
        with runtime.clinical.read_session() as session:
            due = [d.document_id for d in repository.expired_drafts(session, cutoff, BATCH)]
        if not due:
            break
        for document_id in due:
            if dry_run:
                report.expired += 1
                continue
            keys = _expire_one(runtime, document_id, cutoff)
            if keys is not None:
                report.expired += 1
                for key in keys:
                    discard_blob(runtime, key)
        if dry_run or len(due) < BATCH:
            break
    if report.expired:
        logger.info("expired %d undescribed FHIR Binary drafts", report.expired)
    return report


def _expire_one(runtime: Runtime, document_id: uuid.UUID, cutoff: datetime) -> list[str] | None:
    with runtime.clinical.session() as session:
        draft = repository.draft(session, document_id)
        if draft is None or draft.created_at >= cutoff:
            session.rollback()
            return None  # described or expired meanwhile
        document = session.get(Document, draft.document_id)
        if document is None:  # pragma: no cover - the FK cascades drafts away
            session.rollback()
            return None
        now = utcnow()
        versions = documents.versions(session, document.id)
        for version in versions:
            version.state = VersionState.DESTROYED
        document.status = DocumentStatus.DELETED
        document.deleted_at = now
        document.deleted_by = f"system:{ACTOR}"
        document.delete_reason = "FHIR Binary never described by a DocumentReference"
        document.updated_at = now
        session.delete(draft)
        audit.record(
            session=session,
            context=AuditContext.system(ACTOR),
            action="fhir.binary.expired",
            resource_type="Document",
            resource_id=document.id,
            patient_id=document.patient_id,
            details={"versions": len(versions)},
        )
        session.commit()
        return [version.storage_key for version in versions]
