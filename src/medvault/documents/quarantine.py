"""Quarantined versions: what the scanner flagged, and an administrator's two answers.

An infected version is never served (``reading.check_scan``). An administrator who has
looked at the detection either *releases* it (a false positive: served again, and a
rescan repeating the same detection keeps it released) or *destroys* it (its blob is
deleted for good; the row, its hashes and the audit trail stay, and reads answer 410).
Both decisions need a reason and are audited against the patient's record.

Functions flush and never commit, except that a destroyed blob is deleted only after
the caller committed (:func:`discard_blob`): a row that still points at deleted bytes
would be worse than bytes that linger until the reconciler removes them.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from medvault.access.denials import audited_attempt, denied, failed_attempt
from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import arrival, repository
from medvault.documents.models import Document, DocumentVersion, ScanState, VersionState
from medvault.documents.service import readable_or_404
from medvault.governance.holds import refuse_if_held
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.problems import Conflict, NotFound
from medvault.runtime import Runtime
from medvault.storage.base import discard

MAX_LISTED = 500


class QuarantinedVersion(BaseModel):
    document_id: uuid.UUID
    patient_id: uuid.UUID
    version: int
    content_type: str
    size: int
    scan_state: ScanState
    scan_signature: str | None
    scan_engine: str | None
    scanned_at: datetime | None
    state: VersionState


class QuarantineList(BaseModel):
    items: list[QuarantinedVersion]


def _out(document: Document, version: DocumentVersion) -> QuarantinedVersion:
    return QuarantinedVersion(
        document_id=document.id,
        patient_id=document.patient_id,
        version=version.version,
        content_type=version.content_type,
        size=version.size,
        scan_state=ScanState(version.scan_state),
        scan_signature=version.scan_signature,
        scan_engine=version.scan_engine,
        scanned_at=version.scanned_at,
        state=VersionState(version.state),
    )


def list_quarantined(
    *, session: Session, principal: Principal, context: AuditContext
) -> QuarantineList:
    """Infected versions awaiting a decision, oldest verdict first (ids, no titles)."""
    require(principal, Permission.QUARANTINE_ADMIN)
    rows = session.execute(
        select(Document, DocumentVersion)
        .join(DocumentVersion, DocumentVersion.document_id == Document.id)
        .where(
            DocumentVersion.scan_state == ScanState.INFECTED,
            DocumentVersion.state != VersionState.DESTROYED,
        )
        .order_by(DocumentVersion.scanned_at, DocumentVersion.id)
        .limit(MAX_LISTED)
    ).all()
    items = [_out(document, version) for document, version in rows]
    # One event per listed record: the list names patients, and every look at a
    # patient's record is in the audit log.
    for item in items:
        audit.record(
            session=session,
            context=context,
            action="document.quarantine.list",
            resource_type="Document",
            resource_id=item.document_id,
            patient_id=item.patient_id,
            details={"version": item.version},
        )
    return QuarantineList(items=items)


def _infected(
    session: Session,
    principal: Principal,
    document_id: uuid.UUID,
    number: int,
    action: str,
    *,
    destroying: bool = False,
) -> tuple[Document, DocumentVersion]:
    require(principal, Permission.QUARANTINE_ADMIN)
    document, _ = readable_or_404(session, principal, document_id)
    attempt = failed_attempt(
        principal,
        action,
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
    )
    with audited_attempt(attempt):
        version = repository.version(session, document.id, number)
        if version is None:
            raise NotFound(N_("This document has no such version."))
        if destroying:
            # A legal hold freezes the record, infected versions included (the inquiry
            # may need to know what arrived): it is released first, or the version stays.
            refuse_if_held(session, document)
    if version.state == VersionState.DESTROYED or version.scan_state != ScanState.INFECTED:
        problem = Conflict(
            N_("Only a quarantined (infected) version can be released or destroyed.")
        )
        raise denied(problem, attempt)
    return document, version


def _record_decision(
    session: Session,
    context: AuditContext,
    action: str,
    document: Document,
    version: DocumentVersion,
    reason: str,
) -> None:
    session.flush()
    audit.record(
        session=session,
        context=context,
        action=action,
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={"version": version.version, "signature": version.scan_signature, "reason": reason},
    )


def release(
    *,
    session: Session,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    document_id: uuid.UUID,
    number: int,
    reason: str,
) -> QuarantinedVersion:
    action = "document.version.released"
    document, version = _infected(session, principal, document_id, number, action)
    version.scan_state = ScanState.RELEASED
    # Readable again, so previews and text may be made from it now.
    arrival.queue_derivation(session, runtime, version)
    _record_decision(session, context, action, document, version, reason)
    return _out(document, version)


def destroy(
    *,
    session: Session,
    principal: Principal,
    context: AuditContext,
    document_id: uuid.UUID,
    number: int,
    reason: str,
) -> tuple[QuarantinedVersion, str]:
    """Mark the version destroyed; returns it and the blob key to discard after commit."""
    action = "document.version.destroyed"
    document, version = _infected(session, principal, document_id, number, action, destroying=True)
    version.state = VersionState.DESTROYED
    document.updated_at = utcnow()
    _record_decision(session, context, action, document, version, reason)
    return _out(document, version), version.storage_key


def discard_blob(runtime: Runtime, storage_key: str) -> None:
    """Delete a destroyed version's blob; if the store fails, the reconciler finishes it.

    A destroyed row no longer counts as referencing its blob (``integrity.is_version_blob``).
    """
    discard(runtime.blobs, [storage_key], finisher="the reconciler")
