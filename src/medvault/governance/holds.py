"""Legal holds: placed with a reason and a reference, listed, released with a reason.

While a hold is active nothing it covers can be destroyed, by the schedule or by a
person: every destruction path asks :func:`hold_on` in the destroying transaction.
A hold covers a patient's whole record, one document, or a query (a document type
and/or a creation date range, across patients): an inquiry into a ward's notes of a
given month, say.
"""

from __future__ import annotations

import uuid

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from medvault.access.denials import Denial, denied
from medvault.access.policy import Permission, allows, reaches_every_patient
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents.models import Document
from medvault.governance.models import HoldScope, LegalHold
from medvault.governance.schemas import HoldCreate, HoldList, HoldOut
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.problems import Conflict, Forbidden, NotFound, Problem
from medvault.patients.models import Patient


class LegalHoldActive(Problem):
    status, slug, title = 409, "legal-hold", N_("A legal hold covers this record")


def require_governance(
    principal: Principal, action: str, *, patient_id: uuid.UUID | None = None
) -> None:
    """Records governance is vault-wide: its permission, over every patient's records."""
    if allows(principal, Permission.RECORDS_GOVERN) and reaches_every_patient(principal):
        return
    problem = Forbidden(N_("Records governance needs the records:govern permission."))
    raise denied(
        problem,
        Denial(principal, "LegalHold", None, patient_id, permission=Permission.RECORDS_GOVERN),
    )


def hold_on(session: Session, document: Document) -> LegalHold | None:
    """The first active hold covering ``document``, if any (checked in the caller's tx)."""
    holds = session.scalars(
        select(LegalHold).where(
            LegalHold.released_at.is_(None),
            or_(
                and_(
                    LegalHold.scope == HoldScope.PATIENT.value,
                    LegalHold.patient_id == document.patient_id,
                ),
                and_(
                    LegalHold.scope == HoldScope.DOCUMENT.value,
                    LegalHold.document_id == document.id,
                ),
                LegalHold.scope == HoldScope.QUERY.value,
            ),
        )
    )
    created = document.created_at.date()
    for hold in holds:
        if hold.scope != HoldScope.QUERY.value or (
            (hold.document_type is None or hold.document_type == document.document_type)
            and (hold.created_from is None or created >= hold.created_from)
            and (hold.created_to is None or created <= hold.created_to)
        ):
            return hold
    return None


def refuse_if_held(session: Session, document: Document) -> None:
    hold = hold_on(session, document)
    if hold is not None:
        raise LegalHoldActive(
            N_("A legal hold covers this document; it cannot be destroyed until released."),
            hold_id=str(hold.id),
        )


def to_out(hold: LegalHold) -> HoldOut:
    return HoldOut(
        id=hold.id,
        scope=HoldScope(hold.scope),
        patient_id=hold.patient_id,
        document_id=hold.document_id,
        document_type=hold.document_type,
        created_from=hold.created_from,
        created_to=hold.created_to,
        reason=hold.reason,
        reference=hold.reference,
        placed_by=hold.placed_by,
        placed_at=hold.placed_at,
        active=hold.released_at is None,
        released_at=hold.released_at,
        released_by=hold.released_by,
        release_reason=hold.release_reason,
    )


def _subject_patient(session: Session, body: HoldCreate) -> uuid.UUID | None:
    """The patient a hold names (directly, or through its document); 404 if unknown."""
    if body.patient_id is not None:
        if session.get(Patient, body.patient_id) is None:
            raise NotFound(N_("No patient with this id."))
        return body.patient_id
    if body.document_id is not None:
        document = session.get(Document, body.document_id)
        if document is None:
            raise NotFound(N_("No document with this id."))
        return document.patient_id
    return None


def place(
    session: Session, principal: Principal, context: AuditContext, body: HoldCreate
) -> HoldOut:
    require_governance(principal, "legal_hold.place", patient_id=body.patient_id)
    patient_id = _subject_patient(session, body)
    hold = LegalHold(
        scope=body.scope.value,
        patient_id=body.patient_id,
        document_id=body.document_id,
        document_type=body.document_type,
        created_from=body.created_from,
        created_to=body.created_to,
        reason=body.reason,
        reference=body.reference,
        placed_by=principal.actor_id,
        placed_at=utcnow(),
    )
    session.add(hold)
    session.flush()
    audit.record(
        session=session,
        context=context,
        action="legal_hold.place",
        resource_type="LegalHold",
        resource_id=hold.id,
        patient_id=patient_id,
        # The reason stays on the hold: an inquiry's wording may itself be sensitive.
        details={
            "scope": hold.scope,
            "reference": hold.reference,
            "document_id": _str(hold.document_id),
        },
    )
    return to_out(hold)


def _str(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def _hold_or_404(session: Session, hold_id: uuid.UUID) -> LegalHold:
    hold = session.get(LegalHold, hold_id)
    if hold is None:
        raise NotFound(N_("No legal hold with this id."))
    return hold


def _hold_patient(session: Session, hold: LegalHold) -> uuid.UUID | None:
    if hold.patient_id is not None:
        return hold.patient_id
    if hold.document_id is not None:
        document = session.get(Document, hold.document_id)
        return document.patient_id if document is not None else None
    return None


def get(
    session: Session, principal: Principal, context: AuditContext, hold_id: uuid.UUID
) -> HoldOut:
    require_governance(principal, "legal_hold.read")
    hold = _hold_or_404(session, hold_id)
    audit.record(
        session=session,
        context=context,
        action="legal_hold.read",
        resource_type="LegalHold",
        resource_id=hold.id,
        patient_id=_hold_patient(session, hold),
    )
    return to_out(hold)


def release(
    session: Session,
    principal: Principal,
    context: AuditContext,
    hold_id: uuid.UUID,
    reason: str,
) -> HoldOut:
    require_governance(principal, "legal_hold.release")
    hold = _hold_or_404(session, hold_id)
    if hold.released_at is not None:
        raise Conflict(N_("This legal hold was already released."))
    hold.released_at = utcnow()
    hold.released_by = principal.actor_id
    hold.release_reason = reason
    audit.record(
        session=session,
        context=context,
        action="legal_hold.release",
        resource_type="LegalHold",
        resource_id=hold.id,
        patient_id=_hold_patient(session, hold),
        details={"scope": hold.scope, "reference": hold.reference},
    )
    return to_out(hold)


def list_holds(
    session: Session,
    principal: Principal,
    context: AuditContext,
    *,
    active: bool | None,
    patient_id: uuid.UUID | None,
) -> HoldList:
    require_governance(principal, "legal_hold.list", patient_id=patient_id)
    query = select(LegalHold).order_by(LegalHold.placed_at.desc(), LegalHold.id)
    if active is not None:
        query = query.where(
            LegalHold.released_at.is_(None) if active else LegalHold.released_at.is_not(None)
        )
    if patient_id is not None:
        query = query.where(
            or_(
                LegalHold.patient_id == patient_id,
                exists(
                    select(Document.id).where(
                        Document.id == LegalHold.document_id, Document.patient_id == patient_id
                    )
                ),
            )
        )
    holds = list(session.scalars(query.limit(1000)))
    audit.record(
        session=session,
        context=context,
        action="legal_hold.list",
        resource_type="LegalHold",
        patient_id=patient_id,
        details={"count": len(holds)},
    )
    return HoldList(items=[to_out(hold) for hold in holds])
