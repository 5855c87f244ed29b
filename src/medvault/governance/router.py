"""The records-governance API: retention classes, legal holds, appraisal decisions.

Everything here is vault-wide and needs ``records:govern`` (admins; API tokens given
that scope), so a records manager's token does not need clinical-content scopes.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from medvault.deps import AuditCtx, ClinicalSession, CurrentPrincipal, RuntimeDep
from medvault.governance import appraisal, holds
from medvault.governance.catalogue import describe_schedule
from medvault.governance.models import AppraisalState
from medvault.governance.schemas import (
    AppraisalList,
    AppraisalOut,
    Approve,
    HoldCreate,
    HoldList,
    HoldOut,
    HoldRelease,
    Keep,
    RetentionClassList,
)
from medvault.kit.ids import parse_id

router = APIRouter(prefix="/api/v1/governance", tags=["governance"])


@router.get("/retention-classes", response_model=RetentionClassList)
def retention_classes(principal: CurrentPrincipal, runtime: RuntimeDep) -> RetentionClassList:
    """The schedule in force: each class's rules and the document types mapped to it."""
    holds.require_governance(principal, "retention.classes.read")
    return describe_schedule(runtime.retention)


@router.post("/holds", status_code=201, response_model=HoldOut)
def place_hold(
    body: HoldCreate,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    response: Response,
) -> HoldOut:
    """Freeze a patient's record, a document, or every document a query matches."""
    placed = holds.place(session, principal, context, body)
    session.commit()
    response.headers["Location"] = f"/api/v1/governance/holds/{placed.id}"
    return placed


@router.get("/holds", response_model=HoldList)
def list_holds(
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    active: Annotated[bool | None, Query(description="Only active (or released) holds")] = None,
    patient_id: Annotated[
        uuid.UUID | None, Query(description="Holds naming this patient or one of its documents")
    ] = None,
) -> HoldList:
    listed = holds.list_holds(
        session,
        principal,
        context,
        active=active,
        patient_id=patient_id,
    )
    session.commit()
    return listed


@router.get("/holds/{hold_id}", response_model=HoldOut)
def get_hold(
    hold_id: str, session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx
) -> HoldOut:
    found = holds.get(session, principal, context, parse_id(hold_id))
    session.commit()
    return found


@router.post("/holds/{hold_id}/release", response_model=HoldOut)
def release_hold(
    hold_id: str,
    body: HoldRelease,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> HoldOut:
    """End a hold, with the reason; what it covered follows the schedule again."""
    released = holds.release(session, principal, context, parse_id(hold_id), body.reason)
    session.commit()
    return released


@router.get("/appraisals", response_model=AppraisalList)
def list_appraisals(
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    state: AppraisalState | None = None,
) -> AppraisalList:
    """Records past their retention date, and the decisions taken on them."""
    listed = appraisal.list_appraisals(session, runtime, principal, context, state=state)
    session.commit()
    return listed


@router.post("/appraisals/{appraisal_id}/approve", response_model=AppraisalOut)
def approve_destruction(
    appraisal_id: str,
    body: Approve,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
) -> AppraisalOut:
    """Approve destruction; the last approval needed hands it to the destruction job."""
    approved = appraisal.approve(
        session, runtime, principal, context, parse_id(appraisal_id), body.reason
    )
    session.commit()
    return approved


@router.post("/appraisals/{appraisal_id}/keep", response_model=AppraisalOut)
def keep_record(
    appraisal_id: str,
    body: Keep,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
) -> AppraisalOut:
    """Appraised as of continuing value: kept until ``keep_until``, then listed again."""
    kept = appraisal.keep(
        session, runtime, principal, context, parse_id(appraisal_id), body.reason, body.keep_until
    )
    session.commit()
    return kept
