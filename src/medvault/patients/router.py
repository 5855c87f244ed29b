"""Patient registry endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.deps import (
    AuditCtx,
    ClinicalSession,
    CurrentPrincipal,
    PatientSession,
    RuntimeDep,
)
from medvault.kit.ids import parse_id
from medvault.kit.timestamps import IsoDate
from medvault.patients import service
from medvault.patients.schemas import PatientCreate, PatientOut, PatientPage, PatientUpdate

router = APIRouter(prefix="/api/v1/patients", tags=["patients"])


@router.post("", status_code=201, response_model=PatientOut)
def create_patient(
    data: PatientCreate,
    session: ClinicalSession,
    patient_session: PatientSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    response: Response,
) -> PatientOut:
    """Register a patient. A second patient with the same identifier is a 409."""
    require(principal, Permission.PATIENT_WRITE)
    patient = service.create(
        session=session,
        patient_session=patient_session,
        data=data,
        context=context,
        registered_by=principal,
    )
    service.commit_with_audit(patient_session=patient_session, clinical_session=session)
    response.headers["Location"] = f"/api/v1/patients/{patient.id}"
    return service.to_out(patient)


@router.get("/{patient_id}", response_model=PatientOut)
def get_patient(
    patient_id: str, session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx
) -> PatientOut:
    require(principal, Permission.PATIENT_READ)
    patient = service.get(
        session=session, principal=principal, patient_id=parse_id(patient_id), context=context
    )
    audit.commit_or_refuse(session)
    return service.to_out(patient)


@router.patch("/{patient_id}", response_model=PatientOut)
def update_patient(
    patient_id: str,
    data: PatientUpdate,
    session: ClinicalSession,
    patient_session: PatientSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
) -> PatientOut:
    """Record a date of death or an end of treatment: the record's retention dates follow."""
    require(principal, Permission.PATIENT_WRITE)
    patient = service.update(
        session=session,
        patient_session=patient_session,
        principal=principal,
        patient_id=parse_id(patient_id),
        data=data,
        context=context,
        schedule=runtime.retention,
    )
    service.commit_with_audit(patient_session=patient_session, clinical_session=session)
    return service.to_out(patient)


@router.get("", response_model=PatientPage)
def search_patients(
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    identifier: Annotated[
        str | None,
        Query(
            description="system|value", examples=["https://fhir.nhs.uk/Id/nhs-number|9434765919"]
        ),
    ] = None,
    name: Annotated[
        str | None,
        Query(max_length=200, description="Words that start the given or family name"),
    ] = None,
    birth_date: IsoDate | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> PatientPage:
    require(principal, Permission.PATIENT_READ)
    page = service.search(
        session=session,
        principal=principal,
        identifier=identifier,
        limit=limit,
        cursor=cursor,
        context=context,
        name=name,
        birth_date=birth_date,
    )
    audit.commit_or_refuse(session)
    return page
