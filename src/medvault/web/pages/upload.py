"""Uploading files from the browser: one XHR per file, streamed like any API upload.

The page's script sends each file as its own multipart request, so every file has
its own progress bar, can be cancelled on its own, and gets its own answer. The body
is never parsed here: it streams into the same pipeline as ``POST /api/v1/documents``
(the CSRF token comes in a header for that reason).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from medvault.access.policy import Permission, require, require_upload
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal, Role
from medvault.auth.ratelimit import RateLimits
from medvault.deps import ClinicalSession, RateLimitsDep, RuntimeDep, declared_length
from medvault.documents import upload
from medvault.kit.i18n import gettext as _
from medvault.kit.ids import parse_id
from medvault.runtime import Runtime
from medvault.web import presenters
from medvault.web.pages import resumable
from medvault.web.session import CsrfChecked, PortalAuditCtx, PortalPrincipal
from medvault.web.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/upload")
def upload_page(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
) -> Response:
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)
    if principal.role is Role.PATIENT:
        choices = []
    else:
        require(principal, Permission.PATIENT_READ)
        choices = presenters.patient_choices(session, principal, context)
        audit.commit_or_refuse(session)
    settings = runtime.settings
    return render(
        request,
        "upload.html",
        {
            "nav": "upload",
            "page_title": _("Upload documents"),
            "patients": choices,
            "own_patient": principal.patient_id,
            "preselected": request.query_params.get("patient", ""),
            # Patients answer "What is this?" in their own words; staff pick the type.
            "types": (
                presenters.patient_upload_choices()
                if principal.role is Role.PATIENT
                else presenters.type_choices(for_patient=False)
            ),
            "max_upload_bytes": settings.max_upload_bytes,
            "allowed_types": settings.allowed_types,
            "accept": ",".join(settings.allowed_types),
            "resumable": resumable.uploader_options(),
        },
    )


async def _store(
    request: Request,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    limits: RateLimits,
    *,
    query: dict[str, str],
    document_id: uuid.UUID | None = None,
) -> Response:
    """Stream one file into the upload pipeline; JSON for the page's script."""
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)
    limits.hit_upload(actor_id=principal.actor_id)
    created = await upload.upload(
        runtime=runtime,
        principal=principal,
        context=context,
        body=request.stream(),
        content_type=request.headers.get("content-type", ""),
        content_length=declared_length(request),
        query=query,
        document_id=document_id,
    )
    return JSONResponse(
        {**created.model_dump(mode="json"), "url": f"/documents/{created.id}"}, status_code=201
    )


@router.post("/upload/files")
async def upload_file(
    request: Request,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    limits: RateLimitsDep,
    _csrf: CsrfChecked,
) -> Response:
    """One file per request (multipart); a patient's uploads always go to their record."""
    query = {"patient_id": str(principal.patient_id)} if principal.role is Role.PATIENT else {}
    return await _store(request, runtime, principal, context, limits, query=query)


@router.post("/documents/{document_id}/versions")
async def upload_version(
    document_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    limits: RateLimitsDep,
    _csrf: CsrfChecked,
) -> Response:
    return await _store(
        request, runtime, principal, context, limits, query={}, document_id=parse_id(document_id)
    )
