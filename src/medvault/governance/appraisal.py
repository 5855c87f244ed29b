"""Appraisal: what has passed its retention date, and the decision on each (Code §5.2).

A periodic job refreshes every record's dates, then lists each document past
``retain_until`` that no hold covers and no open appraisal already lists. A records
manager then either keeps it (of continuing value, until a later date) or approves its
destruction; with ``MEDVAULT_DESTRUCTION_APPROVALS=2`` two different people must
approve. The last approval hands it to the destruction job (``governance.destruction``),
which checks holds and dates once more, in its own transaction, before anything goes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from medvault.access.denials import Denial, audited_attempt, failed_attempt
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents.models import Document
from medvault.governance import retention
from medvault.governance.holds import hold_on, refuse_if_held, require_governance
from medvault.governance.models import Appraisal, AppraisalState
from medvault.governance.schemas import AppraisalList, AppraisalOut, ApprovalOut
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.problems import Conflict, NotFound, Problem
from medvault.processing import kinds, queue
from medvault.runtime import Runtime

REFRESH_BATCH = 500
# States in which a document is already on the list (or kept): not listed again.
OPEN = (AppraisalState.DUE, AppraisalState.APPROVED_ONCE, AppraisalState.APPROVED)


class NotDue(Problem):
    status, slug, title = 409, "not-due", N_("This record is not past its retention date")


@dataclass
class AppraisalReport:
    refreshed: int = 0
    listed: int = 0
    held: int = 0

    def summary(self) -> dict[str, int]:
        return {"refreshed": self.refreshed, "listed": self.listed, "held": self.held}


def _record(
    session: Session,
    context: AuditContext,
    action: str,
    document: Document,
    details: Mapping[str, object],
) -> None:
    """An appraisal step, audited against the document's patient."""
    audit.record(
        session=session,
        context=context,
        action=action,
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details=dict(details),
    )


def _attempt(principal: Principal, action: str, document: Document) -> Denial:
    return failed_attempt(
        principal,
        action,
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
    )


def refresh_all(runtime: Runtime) -> int:
    """Recompute every record's dates, a batch of patients per transaction."""
    changed, after = 0, None
    while True:
        with runtime.clinical.session() as session:
            batch = retention.patients_with_documents(session, after=after, limit=REFRESH_BATCH)
            for patient_id in batch:
                changed += retention.refresh_patient(session, runtime.retention, patient_id)
            session.commit()
        if len(batch) < REFRESH_BATCH:
            return changed
        after = batch[-1]


def _not_listed(today: date) -> object:
    open_or_kept = or_(
        Appraisal.state.in_([state.value for state in OPEN]),
        and_(Appraisal.state == AppraisalState.KEPT.value, Appraisal.keep_until >= today),
    )
    return ~exists(select(Appraisal.id).where(Appraisal.document_id == Document.id, open_or_kept))


def run(runtime: Runtime, *, today: date | None = None) -> AppraisalReport:
    """The periodic job: refresh dates, then list what is due (idempotent)."""
    today = today or utcnow().date()
    report = AppraisalReport(refreshed=refresh_all(runtime))
    context = AuditContext.system("appraisal")
    with runtime.clinical.session() as session:
        due = session.scalars(
            select(Document)
            .where(
                Document.retain_until < today,
                Document.destroyed_at.is_(None),
                _not_listed(today),  # type: ignore[arg-type]
            )
            .order_by(Document.retain_until, Document.id)
        )
        for document in due:
            if hold_on(session, document) is not None:
                report.held += 1
                continue
            assert document.retention_class is not None and document.retain_until is not None
            appraisal = Appraisal(
                document_id=document.id,
                patient_id=document.patient_id,
                retention_class=document.retention_class,
                retain_until=document.retain_until,
                state=AppraisalState.DUE.value,
                listed_at=utcnow(),
                approvals=[],
            )
            session.add(appraisal)
            session.flush()
            listed = {
                "appraisal_id": str(appraisal.id),
                "retention_class": appraisal.retention_class,
                "retain_until": appraisal.retain_until.isoformat(),
            }
            _record(session, context, "retention.appraisal.listed", document, listed)
            report.listed += 1
        session.commit()
    return report


def to_out(appraisal: Appraisal, document_type: str, needed: int) -> AppraisalOut:
    return AppraisalOut(
        id=appraisal.id,
        document_id=appraisal.document_id,
        patient_id=appraisal.patient_id,
        document_type=document_type,
        retention_class=appraisal.retention_class,
        retain_until=appraisal.retain_until,
        state=AppraisalState(appraisal.state),
        listed_at=appraisal.listed_at,
        approvals=[ApprovalOut.model_validate(item) for item in appraisal.approvals],
        approvals_needed=needed,
        decided_at=appraisal.decided_at,
        keep_until=appraisal.keep_until,
        note=appraisal.note,
    )


def list_appraisals(
    session: Session,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    *,
    state: AppraisalState | None,
) -> AppraisalList:
    require_governance(principal, "retention.appraisal.list")
    query = (
        select(Appraisal, Document.document_type)
        .join(Document, Document.id == Appraisal.document_id)
        .order_by(Appraisal.listed_at, Appraisal.id)
        .limit(1000)
    )
    if state is not None:
        query = query.where(Appraisal.state == state.value)
    rows = [(row[0], row[1]) for row in session.execute(query)]
    needed = runtime.settings.destruction_approvals
    audit.record(
        session=session,
        context=context,
        action="retention.appraisal.list",
        resource_type="Appraisal",
        details={"count": len(rows), "state": state.value if state else None},
    )
    return AppraisalList(items=[to_out(item, kind, needed) for item, kind in rows])


def _open(session: Session, appraisal_id: uuid.UUID) -> tuple[Appraisal, Document]:
    appraisal = session.scalar(
        select(Appraisal).where(Appraisal.id == appraisal_id).with_for_update()
    )
    if appraisal is None:
        raise NotFound(N_("No appraisal with this id."))
    document = session.get(Document, appraisal.document_id)
    assert document is not None  # a foreign key with ON DELETE RESTRICT
    return appraisal, document


def approve(
    session: Session,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    appraisal_id: uuid.UUID,
    reason: str,
) -> AppraisalOut:
    """One approval of destruction; the last one needed queues the destruction job."""
    require_governance(principal, "retention.destruction.approve")
    appraisal, document = _open(session, appraisal_id)
    with audited_attempt(_attempt(principal, "retention.destruction.approve", document)):
        if appraisal.state not in (AppraisalState.DUE, AppraisalState.APPROVED_ONCE):
            raise Conflict(N_("This appraisal is not waiting for an approval."))
        if any(item["actor"] == principal.actor_id for item in appraisal.approvals):
            raise Conflict(N_("A second approval must come from a different person."))
        refuse_if_held(session, document)
        retention.refresh_patient(session, runtime.retention, document.patient_id)
        session.refresh(document)
        if document.retain_until is None or document.retain_until >= utcnow().date():
            raise NotDue(N_("Its retention date moved (a new entry, or new dates): not due."))
    now = utcnow()
    approval = {
        "actor": principal.actor_id,
        "role": principal.role.value,
        "at": now.isoformat(),
        "reason": reason,
    }
    # A new list, so SQLAlchemy sees the JSON column change.
    appraisal.approvals = [*appraisal.approvals, approval]
    needed = runtime.settings.destruction_approvals
    final = len(appraisal.approvals) >= needed
    appraisal.state = (AppraisalState.APPROVED if final else AppraisalState.APPROVED_ONCE).value
    if final:
        appraisal.decided_at = now
        queue.enqueue(
            session,
            kinds.DESTROY,
            {"appraisal_id": str(appraisal.id)},
            dedupe_key=kinds.destroy_key(appraisal.id),
        )
    approved = {
        "appraisal_id": str(appraisal.id),
        "approval": len(appraisal.approvals),
        "of": needed,
        "reason": reason,
    }
    _record(session, context, "retention.destruction.approved", document, approved)
    return to_out(appraisal, document.document_type, needed)


def keep(
    session: Session,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    appraisal_id: uuid.UUID,
    reason: str,
    keep_until: date,
) -> AppraisalOut:
    """Appraised as of continuing value: kept, and listed again after ``keep_until``."""
    require_governance(principal, "retention.appraisal.keep")
    appraisal, document = _open(session, appraisal_id)
    with audited_attempt(_attempt(principal, "retention.appraisal.keep", document)):
        if appraisal.state not in (AppraisalState.DUE, AppraisalState.APPROVED_ONCE):
            raise Conflict(N_("This appraisal is not waiting for a decision."))
        if keep_until <= utcnow().date():
            raise Conflict(N_("keep_until must be a future date."))
    appraisal.state = AppraisalState.KEPT.value
    appraisal.keep_until = keep_until
    appraisal.note = reason
    appraisal.decided_at = utcnow()
    kept = {
        "appraisal_id": str(appraisal.id),
        "keep_until": keep_until.isoformat(),
        "reason": reason,
    }
    _record(session, context, "retention.appraisal.kept", document, kept)
    return to_out(appraisal, document.document_type, runtime.settings.destruction_approvals)
