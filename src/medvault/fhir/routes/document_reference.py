"""DocumentReference routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from medvault.access.policy import Permission, require, require_upload
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.db.replica import read_with_fallback
from medvault.deps import (
    AuditCtx,
    ClinicalReplicaSession,
    ClinicalSession,
    CurrentPrincipal,
    RuntimeDep,
    UploadRateLimit,
)
from medvault.fhir import document_reference as service
from medvault.fhir import document_reference_create, document_reference_search
from medvault.fhir.base import base_url
from medvault.fhir.routes import searching
from medvault.fhir.wire.http import (
    http_date,
    query_params,
    read_resource,
    require_json,
    strict,
    written,
)
from medvault.fhir.wire.outcome import information
from medvault.fhir.wire.responses import fhir_response, negotiate
from medvault.kit.problems import NotFound
from medvault.runtime import Runtime

router = APIRouter(prefix="/DocumentReference")

DEFAULT_DELETE_REASON = "Marked entered-in-error through the FHIR API"


def _read_response(request: Request, resource: dict[str, Any], updated: str) -> Response:
    headers = {"ETag": f'W/"{resource["meta"]["versionId"]}"', "Last-Modified": updated}
    return fhir_response(resource, media_type=negotiate(request), headers=headers)


def _last_modified(resource: dict[str, Any]) -> str:
    return http_date(datetime.fromisoformat(resource["meta"]["lastUpdated"]))


@router.get("")
def search(
    request: Request,
    session: ClinicalReplicaSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> Response:
    media_type = negotiate(request)
    require(principal, Permission.DOCUMENT_READ)
    bundle = read_with_fallback(
        session,
        lambda: document_reference_search.search(
            session=session,
            runtime=request.app.state.runtime,
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
async def search_by_post(
    request: Request, principal: CurrentPrincipal, context: AuditCtx, runtime: RuntimeDep
) -> Response:
    media_type = negotiate(request)
    require(principal, Permission.DOCUMENT_READ)
    return await searching.search_by_post(
        request,
        runtime,
        media_type,
        lambda session, params: document_reference_search.search(
            session=session,
            runtime=runtime,
            principal=principal,
            params=params,
            strict=strict(request),
            context=context,
            base=base_url(request, runtime.settings),
        ),
    )


@router.get("/{resource_id}")
def read(
    resource_id: str,
    request: Request,
    session: ClinicalReplicaSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> Response:
    negotiate(request)
    require(principal, Permission.DOCUMENT_READ)
    resource = _read_current(request, session, principal, context, resource_id)
    audit.commit_or_refuse(session)
    return _read_response(request, resource, _last_modified(resource))


def _read_current(
    request: Request,
    session: Session,
    principal: Principal,
    context: AuditContext,
    resource_id: str,
) -> dict[str, Any]:
    """The current resource, from the replica when allowed; a miss there asks the primary."""
    return read_with_fallback(
        session,
        lambda: service.read(
            session=session,
            principal=principal,
            raw_id=resource_id,
            context=context,
            base=base_url(request, request.app.state.runtime.settings),
        ),
        miss=(NotFound,),
    )


@router.get("/{resource_id}/_history/{version_id}")
def vread(
    resource_id: str,
    version_id: str,
    request: Request,
    session: ClinicalReplicaSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> Response:
    """Only the current version id resolves: earlier metadata versions are not kept."""
    negotiate(request)
    require(principal, Permission.DOCUMENT_READ)
    resource = _read_current(request, session, principal, context, resource_id)
    if resource["meta"]["versionId"] != version_id:
        session.rollback()  # no read happened: nothing is returned
        raise NotFound("That version of the DocumentReference is not kept; read the current one.")
    audit.commit_or_refuse(session)
    return _read_response(request, resource, _last_modified(resource))


@router.post("", status_code=201)
async def create_document_reference(
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    _rate: UploadRateLimit,
) -> Response:
    """Store a document: attachment.data (base64, streamed) or a Binary stored first."""
    media_type = negotiate(request)
    require_json(request)
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)
    base = base_url(request, runtime.settings)
    created = await document_reference_create.create_document_reference(
        runtime=runtime, principal=principal, context=context, body=request.stream(), base=base
    )
    resource = created.resource
    version = resource["meta"]["versionId"]
    headers = {
        "Location": f"{base}/DocumentReference/{resource['id']}/_history/{version}",
        "ETag": f'W/"{version}"',
        "Last-Modified": _last_modified(resource),
    }
    return written(
        request,
        resource,
        status=201,
        media_type=media_type,
        headers=headers,
        message=f"Created DocumentReference/{resource['id']}.",
    )


def _update(
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    resource_id: str,
    body: dict[str, Any],
    if_match: str | None,
    base: str,
) -> dict[str, Any]:
    with runtime.clinical.session() as session:
        resource = service.update(
            session=session,
            runtime=runtime,
            principal=principal,
            raw_id=resource_id,
            body=body,
            if_match=if_match,
            context=context,
            base=base,
        )
        session.commit()
        return resource


@router.put("/{resource_id}")
async def update(
    resource_id: str,
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Change metadata (type, title, description, securityLabel); If-Match is required."""
    media_type = negotiate(request)
    require(principal, Permission.DOCUMENT_WRITE)
    require_json(request)
    body = await read_resource(request.stream(), expected="DocumentReference")
    base = base_url(request, runtime.settings)
    resource = await run_in_threadpool(
        _update, runtime, principal, context, resource_id, body, if_match, base
    )
    version = resource["meta"]["versionId"]
    headers = {
        "Location": f"{base}/DocumentReference/{resource['id']}/_history/{version}",
        "ETag": f'W/"{version}"',
        "Last-Modified": _last_modified(resource),
    }
    return written(
        request,
        resource,
        status=200,
        media_type=media_type,
        headers=headers,
        message=f"Updated DocumentReference/{resource['id']}.",
    )


@router.delete("/{resource_id}")
def delete(
    resource_id: str,
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Mark the document entered-in-error (a soft delete). Deleting twice is fine."""
    media_type = negotiate(request)
    require(principal, Permission.DOCUMENT_DELETE)
    reason = (request.query_params.get("reason") or "").strip()[:500] or DEFAULT_DELETE_REASON
    changed = service.delete(
        session=session,
        principal=principal,
        raw_id=resource_id,
        if_match=if_match,
        reason=reason,
        context=context,
    )
    session.commit()
    message = (
        "The document is now entered-in-error."
        if changed
        else "The document was already entered-in-error."
    )
    return fhir_response(information(message), media_type=media_type)
