"""Patient routes: read and search."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.deps import AuditCtx, ClinicalSession, CurrentPrincipal, RuntimeDep
from medvault.fhir import patient
from medvault.fhir.base import base_url
from medvault.fhir.mapping.patient import PATIENT_VERSION
from medvault.fhir.routes import searching
from medvault.fhir.wire.http import query_params, strict
from medvault.fhir.wire.responses import fhir_response, negotiate

router = APIRouter(prefix="/Patient")


@router.get("")
def search_patients(
    request: Request, session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx
) -> Response:
    media_type = negotiate(request)
    require(principal, Permission.PATIENT_READ)
    bundle = patient.search(
        session=session,
        principal=principal,
        params=query_params(request),
        strict=strict(request),
        context=context,
        base=base_url(request, request.app.state.runtime.settings),
    )
    audit.commit_or_refuse(session)
    return fhir_response(bundle, media_type=media_type)


@router.post("/_search")
async def search_patients_by_post(
    request: Request, principal: CurrentPrincipal, context: AuditCtx, runtime: RuntimeDep
) -> Response:
    require(principal, Permission.PATIENT_READ)
    base = base_url(request, runtime.settings)
    return await searching.search_by_post(
        request,
        runtime,
        negotiate(request),
        lambda session, params: patient.search(
            session=session,
            principal=principal,
            params=params,
            strict=strict(request),
            context=context,
            base=base,
        ),
    )


@router.get("/{resource_id}")
def read_patient(
    resource_id: str,
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> Response:
    media_type = negotiate(request)
    require(principal, Permission.PATIENT_READ)
    resource = patient.read(
        session=session, principal=principal, raw_id=resource_id, context=context
    )
    audit.commit_or_refuse(session)
    return fhir_response(
        resource, media_type=media_type, headers={"ETag": f'W/"{PATIENT_VERSION}"'}
    )
