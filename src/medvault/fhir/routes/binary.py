"""Binary routes: raw bytes or the FHIR resource form, and creation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from medvault.access.policy import Permission, require, require_upload
from medvault.deps import AuditCtx, CurrentPrincipal, RuntimeDep, UploadRateLimit
from medvault.documents import reading, repository
from medvault.documents.http_content import Conditions, streamed
from medvault.documents.schemas import DocumentOut
from medvault.fhir import binary as service
from medvault.fhir import binary_create as create
from medvault.fhir.base import base_url
from medvault.fhir.wire.http import is_json, written
from medvault.fhir.wire.responses import negotiate, wants_resource_form
from medvault.kit.problems import NotFound
from medvault.runtime import Runtime

router = APIRouter(prefix="/Binary")


def _read(
    *,
    resource_id: str,
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    conditions: Conditions,
) -> Response:
    version = service.readable(runtime=runtime, principal=principal, raw_id=resource_id)
    if not wants_resource_form(request, version.content_type):
        # The raw bytes, read exactly as the REST content route reads them.
        plan = reading.read_content(
            runtime=runtime,
            context=context,
            authorise=service.for_binary(principal, resource_id),
            conditions=conditions,
        )
        return streamed(plan)
    media_type = negotiate(request)
    raw_url = f"{base_url(request, runtime.settings)}/Binary/{version.id}"
    form = service.resource_form(
        runtime=runtime,
        principal=principal,
        version=version,
        context=context,
        raw_url=raw_url,
    )
    return StreamingResponse(
        form.body, headers=form.headers, media_type=f"{media_type}; charset=utf-8"
    )


@router.get("/{resource_id}", response_class=StreamingResponse)
def read(
    resource_id: str,
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    conditions: Conditions,
) -> Response:
    """Raw bytes (Range, If-None-Match) unless FHIR JSON is asked for (base64, size-capped)."""
    return _read(
        resource_id=resource_id,
        request=request,
        principal=principal,
        context=context,
        runtime=runtime,
        conditions=conditions,
    )


@router.get("/{resource_id}/_history/{version_id}", response_class=StreamingResponse)
def vread(
    resource_id: str,
    version_id: str,
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    conditions: Conditions,
) -> Response:
    """A stored version never changes, so its only version id is 1."""
    require(principal, Permission.CONTENT_READ)
    if version_id != service.BINARY_VERSION:
        raise NotFound("A Binary has one version, 1.")
    return _read(
        resource_id=resource_id,
        request=request,
        principal=principal,
        context=context,
        runtime=runtime,
        conditions=conditions,
    )


def _metadata(runtime: Runtime, created: DocumentOut) -> dict[str, Any]:
    with runtime.clinical.read_session() as session:
        version = repository.version(session, created.id, created.version)
        assert version is not None
        return service.metadata(version)


@router.post("", status_code=201)
async def create_binary(
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    _rate: UploadRateLimit,
    security_context: Annotated[str | None, Header(alias="X-Security-Context")] = None,
) -> Response:
    """The raw file (with X-Security-Context), or a Binary resource with base64 data."""
    media_type = negotiate(request)
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)
    base = base_url(request, runtime.settings)
    if is_json(request):
        created = await create.create_binary_json(
            runtime=runtime,
            principal=principal,
            context=context,
            body=request.stream(),
            security_context=security_context,
            base=base,
        )
    else:
        created = await create.create_binary_raw(
            runtime=runtime,
            principal=principal,
            context=context,
            body=request.stream(),
            content_type=request.headers.get("content-type"),
            security_context=security_context,
            base=base,
        )
    resource = await run_in_threadpool(_metadata, runtime, created)
    headers = {
        "Location": f"{base}/Binary/{resource['id']}/_history/{service.BINARY_VERSION}",
        "ETag": f'W/"{service.BINARY_VERSION}"',
    }
    return written(
        request,
        resource,
        status=201,
        media_type=media_type,
        headers=headers,
        message=f"Created Binary/{resource['id']}.",
    )
