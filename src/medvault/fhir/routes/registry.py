"""Patient and AuditEvent routes (read and search)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from medvault.access.audit_reach import require_audit_events
from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.deps import (
    AuditCtx,
    AuthReadSession,
    ClinicalSession,
    CurrentPrincipal,
    RuntimeDep,
)
from medvault.fhir import audit_events, patients
from medvault.fhir.base import base_url
from medvault.fhir.http import query_params, search_params, strict
from medvault.fhir.mapping.patient import PATIENT_VERSION
from medvault.fhir.media import fhir_response, negotiate

router = APIRouter()


@router.get("/Patient")
def search_patients(
    request: Request, session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx
) -> Response:
    media_type = negotiate(request)
    require(principal, Permission.PATIENT_READ)
    bundle = patients.search(
        session=session,
        principal=principal,
        params=query_params(request),
        strict=strict(request),
        context=context,
        base=base_url(request, request.app.state.runtime.settings),
    )
    audit.commit_or_refuse(session)
    return fhir_response(bundle, media_type=media_type)


async def _post_search(
    request: Request, runtime: RuntimeDep, run: Callable[..., dict[str, Any]]
) -> Response:
    media_type = negotiate(request)
    params = await search_params(request)

    def in_session() -> dict[str, Any]:
        with runtime.clinical.session() as session:
            bundle = run(session, params)
            audit.commit_or_refuse(session)
            return bundle

    return fhir_response(await run_in_threadpool(in_session), media_type=media_type)


@router.post("/Patient/_search")
async def search_patients_by_post(
    request: Request, principal: CurrentPrincipal, context: AuditCtx, runtime: RuntimeDep
) -> Response:
    require(principal, Permission.PATIENT_READ)
    base = base_url(request, runtime.settings)
    return await _post_search(
        request,
        runtime,
        lambda session, params: patients.search(
            session=session,
            principal=principal,
            params=params,
            strict=strict(request),
            context=context,
            base=base,
        ),
    )


@router.get("/Patient/{resource_id}")
def read_patient(
    resource_id: str,
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> Response:
    media_type = negotiate(request)
    require(principal, Permission.PATIENT_READ)
    resource = patients.read(
        session=session, principal=principal, raw_id=resource_id, context=context
    )
    audit.commit_or_refuse(session)
    return fhir_response(
        resource, media_type=media_type, headers={"ETag": f'W/"{PATIENT_VERSION}"'}
    )


@router.get("/AuditEvent")
def search_audit_events(
    request: Request,
    session: ClinicalSession,
    auth_session: AuthReadSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> Response:
    """Auditors search the whole log; patients the events about their own record."""
    media_type = negotiate(request)
    require_audit_events(principal)
    bundle = audit_events.search(
        session=session,
        auth_session=auth_session,
        principal=principal,
        params=query_params(request),
        strict=strict(request),
        context=context,
        base=base_url(request, request.app.state.runtime.settings),
    )
    audit.commit_or_refuse(session)
    return fhir_response(bundle, media_type=media_type)


@router.post("/AuditEvent/_search")
async def search_audit_events_by_post(
    request: Request, principal: CurrentPrincipal, context: AuditCtx, runtime: RuntimeDep
) -> Response:
    require_audit_events(principal)
    base = base_url(request, runtime.settings)

    def run(session: Session, params: list[tuple[str, str]]) -> dict[str, Any]:
        with runtime.auth.read_session() as auth_session:
            return audit_events.search(
                session=session,
                auth_session=auth_session,
                principal=principal,
                params=params,
                strict=strict(request),
                context=context,
                base=base,
            )

    return await _post_search(request, runtime, run)


@router.get("/AuditEvent/{resource_id}")
def read_audit_event(
    resource_id: str,
    request: Request,
    session: ClinicalSession,
    auth_session: AuthReadSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> Response:
    media_type = negotiate(request)
    require_audit_events(principal)
    resource = audit_events.read(
        session=session,
        auth_session=auth_session,
        principal=principal,
        raw_id=resource_id,
        context=context,
    )
    audit.commit_or_refuse(session)
    return fhir_response(resource, media_type=media_type, headers={"ETag": 'W/"1"'})
