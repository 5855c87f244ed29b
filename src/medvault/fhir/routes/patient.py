"""Patient routes: read and search."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.deps import AuditCtx, ClinicalSession, CurrentPrincipal, RuntimeDep
from medvault.fhir import patient
from medvault.fhir.base import base_url
from medvault.fhir.mapping.patient import PATIENT_VERSION
from medvault.fhir.wire.http import query_params, search_params, strict
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
    media_type = negotiate(request)
    params = await search_params(request)

    def run() -> dict[str, Any]:
        with runtime.clinical.session() as session:
            bundle = patient.search(
                session=session,
                principal=principal,
                params=params,
                strict=strict(request),
                context=context,
                base=base,
            )
            audit.commit_or_refuse(session)
            return bundle

    return fhir_response(await run_in_threadpool(run), media_type=media_type)


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
