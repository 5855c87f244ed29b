"""Care-team administration: which clinicians may work on which patients."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from medvault.access import careteams
from medvault.access.policy import Permission, require
from medvault.access.schemas import CareTeamList, CareTeamMemberIn, CareTeamMemberOut
from medvault.audit import service as audit
from medvault.deps import AuditCtx, AuthReadSession, ClinicalSession, CurrentPrincipal
from medvault.kit.ids import parse_id

# The "admin" tag first, as when these routes sat on the auth package's admin router:
# the OpenAPI document groups them the same way.
router = APIRouter(prefix="/api/v1", tags=["admin"])


def _member_out(entry: careteams.CareTeamEntry) -> CareTeamMemberOut:
    return CareTeamMemberOut(
        clinician_id=entry.clinician_id,
        clinician_username=entry.clinician_username,
        patient_id=entry.patient_id,
        added_at=entry.added_at,
        added_by=entry.added_by,
    )


@router.post("/care-teams", status_code=201, response_model=CareTeamMemberOut, tags=["care teams"])
def add_care_team_member(
    data: CareTeamMemberIn,
    principal: CurrentPrincipal,
    context: AuditCtx,
    auth_session: AuthReadSession,
    clinical_session: ClinicalSession,
    response: Response,
) -> CareTeamMemberOut:
    """Open a patient's records to a clinician. 200 if they were already on the team."""
    require(principal, Permission.USERS_ADMIN)
    entry, created = careteams.add(
        clinical_session=clinical_session,
        auth_session=auth_session,
        clinician_id=data.clinician_id,
        patient_id=data.patient_id,
        context=context,
    )
    audit.commit_or_refuse(clinical_session)
    if not created:
        response.status_code = 200
    return _member_out(entry)


@router.delete("/care-teams/{clinician_id}/{patient_id}", status_code=204, tags=["care teams"])
def remove_care_team_member(
    clinician_id: str,
    patient_id: str,
    principal: CurrentPrincipal,
    context: AuditCtx,
    clinical_session: ClinicalSession,
) -> Response:
    require(principal, Permission.USERS_ADMIN)
    careteams.remove(
        clinical_session=clinical_session,
        clinician_id=parse_id(clinician_id),
        patient_id=parse_id(patient_id),
        context=context,
    )
    audit.commit_or_refuse(clinical_session)
    return Response(status_code=204)


@router.get("/care-teams", response_model=CareTeamList, tags=["care teams"])
def list_care_teams(
    principal: CurrentPrincipal,
    auth_session: AuthReadSession,
    clinical_session: ClinicalSession,
    patient_id: Annotated[uuid.UUID | None, Query()] = None,
    clinician_id: Annotated[uuid.UUID | None, Query()] = None,
) -> CareTeamList:
    require(principal, Permission.USERS_ADMIN)
    entries = careteams.list_members(
        clinical_session=clinical_session,
        auth_session=auth_session,
        patient_id=patient_id,
        clinician_id=clinician_id,
    )
    return CareTeamList(items=[_member_out(e) for e in entries])
