"""AuditEvent routes: auditors search the whole log; patients the events about their record."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from medvault.access.audit_reach import require_audit_events
from medvault.audit import service as audit
from medvault.db.replica import read_with_fallback
from medvault.deps import (
    AuditCtx,
    AuthReadSession,
    ClinicalReplicaSession,
    ClinicalSession,
    CurrentPrincipal,
    RuntimeDep,
)
from medvault.fhir import audit_event
from medvault.fhir.base import base_url
from medvault.fhir.routes import searching
from medvault.fhir.wire.http import query_params, strict
from medvault.fhir.wire.responses import fhir_response, negotiate

router = APIRouter(prefix="/AuditEvent")


@router.get("")
def search_audit_events(
    request: Request,
    session: ClinicalReplicaSession,
    auth_session: AuthReadSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> Response:
    """Auditors search the whole log; patients the events about their own record."""
    media_type = negotiate(request)
    require_audit_events(principal)
    bundle = read_with_fallback(
        session,
        lambda: audit_event.search(
            session=session,
            auth_session=auth_session,
            principal=principal,
            params=query_params(request),
            strict=strict(request),
            context=context,
            base=base_url(request, request.app.state.runtime.settings),
        ),
    )
    audit.commit_or_refuse(session)
    return fhir_response(bundle, media_type=media_type)


@router.post("/_search")
async def search_audit_events_by_post(
    request: Request, principal: CurrentPrincipal, context: AuditCtx, runtime: RuntimeDep
) -> Response:
    require_audit_events(principal)
    base = base_url(request, runtime.settings)

    def run(session: Session, params: list[tuple[str, str]]) -> dict[str, Any]:
        # Actors are named from the auth database, read alongside the clinical session.
        with runtime.auth.read_session() as auth_session:
            return audit_event.search(
                session=session,
                auth_session=auth_session,
                principal=principal,
                params=params,
                strict=strict(request),
                context=context,
                base=base,
            )

    return await searching.search_by_post(request, runtime, negotiate(request), run)


@router.get("/{resource_id}")
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
    resource = audit_event.read(
        session=session,
        auth_session=auth_session,
        principal=principal,
        raw_id=resource_id,
        context=context,
    )
    audit.commit_or_refuse(session)
    return fhir_response(resource, media_type=media_type, headers={"ETag": 'W/"1"'})
