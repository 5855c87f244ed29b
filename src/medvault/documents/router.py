"""Documents REST API v1. Thin: parse, authorise, call a service, commit, respond."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from medvault.access.policy import Permission, require, require_upload
from medvault.audit import service as audit
from medvault.deps import (
    AuditCtx,
    ClinicalSession,
    CurrentPrincipal,
    RuntimeDep,
    UploadRateLimit,
)
from medvault.documents import service, upload
from medvault.documents.content import ContentPlan, plan_content
from medvault.documents.models import Classification, DocumentStatus
from medvault.documents.ordering import DocumentSort
from medvault.documents.repository import ListFilters
from medvault.documents.schemas import (
    MAX_DB_INT,
    DocumentOut,
    DocumentPage,
    DownloadUrlOut,
    DownloadUrlRequest,
    OnDuplicate,
    VersionList,
)
from medvault.kit.ids import parse_id
from medvault.kit.problems import NotFound
from medvault.kit.timestamps import IsoDateTime
from medvault.shares import service as shares

router = APIRouter(prefix="/api/v1/documents", tags=["documents"])

_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file", "patient_id", "document_type"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "patient_id": {"type": "string", "format": "uuid"},
        "document_type": {"type": "string", "examples": ["11502-2"]},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "classification": {"type": "string", "enum": [c.value for c in Classification]},
        "on_duplicate": {"type": "string", "enum": [d.value for d in OnDuplicate]},
    },
}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "multipart/form-data with a `file` field, or the raw file as the body "
        "(metadata then goes in query parameters).",
        "content": {
            "multipart/form-data": {"schema": _FORM_SCHEMA},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    return int(raw) if raw and raw.isdigit() else None


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@router.post(
    "",
    status_code=201,
    response_model=DocumentOut,
    openapi_extra=_UPLOAD_BODY,
    responses={
        409: {"description": "Duplicate content for this patient"},
        413: {"description": "Too large"},
        415: {"description": "Type not accepted"},
    },
)
async def upload_document(
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    response: Response,
    _rate: UploadRateLimit,
    patient_id: Annotated[str | None, Query(description="Raw uploads: the patient")] = None,
    document_type: Annotated[str | None, Query(description="Raw uploads: LOINC code")] = None,
    title: Annotated[str | None, Query()] = None,
    description: Annotated[str | None, Query()] = None,
    classification: Annotated[Classification | None, Query()] = None,
    filename: Annotated[str | None, Query(description="Raw uploads: the file's name")] = None,
    on_duplicate: Annotated[OnDuplicate | None, Query()] = None,
) -> DocumentOut:
    """Upload a document, as multipart/form-data or as the raw request body (fast path)."""
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)
    created = await upload.upload(
        runtime=runtime,
        principal=principal,
        context=context,
        body=request.stream(),
        content_type=request.headers.get("content-type", ""),
        content_length=_content_length(request),
        query=dict(request.query_params),
    )
    response.headers["Location"] = f"/api/v1/documents/{created.id}"
    return created


@router.get("", response_model=DocumentPage)
def list_documents(
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    patient_id: Annotated[str | None, Query()] = None,
    document_type: Annotated[str | None, Query(max_length=16)] = None,
    created_after: IsoDateTime | None = None,
    created_before: IsoDateTime | None = None,
    status: Literal["current", "deleted", "all"] = "current",
    q: Annotated[
        str | None, Query(max_length=200, description="Words in the title or description")
    ] = None,
    sort: DocumentSort = DocumentSort.NEWEST,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> DocumentPage:
    """Newest first unless `sort` says otherwise, with keyset pagination: pass
    `next_cursor` back as `cursor` (with the same `sort`)."""
    require(principal, Permission.DOCUMENT_READ)
    filters = ListFilters(
        patient_id=parse_id(patient_id) if patient_id else None,
        document_type=document_type,
        created_after=_as_utc(created_after),
        created_before=_as_utc(created_before),
        status=None if status == "all" else DocumentStatus(status),
        text=q.strip() or None if q else None,
    )
    page = service.list_page(
        session=session,
        principal=principal,
        filters=filters,
        cursor=cursor,
        limit=limit,
        context=context,
        order=sort,
    )
    audit.commit_or_refuse(session)
    return page


@router.get("/{document_id}", response_model=DocumentOut)
def get_document(
    document_id: str, session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx
) -> DocumentOut:
    require(principal, Permission.DOCUMENT_READ)
    document = service.get(
        session=session, principal=principal, document_id=parse_id(document_id), context=context
    )
    audit.commit_or_refuse(session)
    return document


@router.get("/{document_id}/versions", response_model=VersionList)
def list_versions(
    document_id: str, session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx
) -> VersionList:
    require(principal, Permission.DOCUMENT_READ)
    versions = service.list_versions(
        session=session, principal=principal, document_id=parse_id(document_id), context=context
    )
    audit.commit_or_refuse(session)
    return versions


@router.post(
    "/{document_id}/versions",
    status_code=201,
    response_model=DocumentOut,
    openapi_extra=_UPLOAD_BODY,
)
async def upload_version(
    document_id: str,
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    _rate: UploadRateLimit,
    filename: Annotated[str | None, Query(description="Raw uploads: the file's name")] = None,
    on_duplicate: Annotated[OnDuplicate | None, Query()] = None,
) -> DocumentOut:
    """Add a new version; the previous versions stay readable and unchanged."""
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)
    return await upload.upload(
        runtime=runtime,
        principal=principal,
        context=context,
        body=request.stream(),
        content_type=request.headers.get("content-type", ""),
        content_length=_content_length(request),
        query=dict(request.query_params),
        document_id=parse_id(document_id),
    )


def plan_response(plan: ContentPlan) -> Response:
    if plan.body is None:
        return Response(status_code=plan.status, headers=plan.headers)
    return StreamingResponse(
        plan.body,
        status_code=plan.status,
        headers=plan.headers,
        media_type=plan.headers["Content-Type"],
    )


def serve_version(
    *,
    document_id: str,
    number: int | None,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    range_header: str | None,
    if_none_match: str | None,
    if_range: str | None,
    disposition: str,
) -> Response:
    """Authorise, audit (before any byte), then stream one version's content.

    Shared by every HTTP face of the vault (REST, portal, FHIR Binary), so they all
    read content with the same policy check and the same audit event.
    """
    require(principal, Permission.CONTENT_READ)
    document, version = service.resolve_version(
        session=session, principal=principal, document_id=parse_id(document_id), number=number
    )
    # End the read transaction before touching storage: on SQLite it holds the write
    # lock, which marking a corrupt version (in its own session) would wait on.
    session.commit()
    plan = plan_content(
        runtime=runtime,
        version=version,
        range_header=range_header,
        if_none_match=if_none_match,
        if_range=if_range,
        disposition=disposition,
    )
    audit.record(
        session=session,
        context=context,
        action="document.content.read",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={
            "version": version.version,
            "status": plan.status,
            "range": plan.headers.get("Content-Range"),
        },
    )
    audit.commit_or_refuse(session)
    return plan_response(plan)


Disposition = Annotated[Literal["attachment", "inline"], Query()]


@router.get("/{document_id}/content", response_class=StreamingResponse)
def get_content(
    document_id: str,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
    disposition: Disposition = "attachment",
) -> Response:
    """The current version's bytes. Supports Range (206), If-None-Match (304) and If-Range."""
    return serve_version(
        document_id=document_id,
        number=None,
        session=session,
        principal=principal,
        context=context,
        runtime=runtime,
        range_header=range_header,
        if_none_match=if_none_match,
        if_range=if_range,
        disposition=disposition,
    )


@router.get("/{document_id}/versions/{number}/content", response_class=StreamingResponse)
def get_version_content(
    document_id: str,
    number: str,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
    disposition: Disposition = "attachment",
) -> Response:
    # ASCII digits only ("²".isdigit() is true), and within the column's range: a
    # number no version can have is simply not found, never a driver overflow.
    plausible = number.isascii() and number.isdigit() and len(number) <= len(str(MAX_DB_INT))
    if not plausible or not 1 <= int(number) <= MAX_DB_INT:
        raise NotFound("This document has no such version.")
    return serve_version(
        document_id=document_id,
        number=int(number),
        session=session,
        principal=principal,
        context=context,
        runtime=runtime,
        range_header=range_header,
        if_none_match=if_none_match,
        if_range=if_range,
        disposition=disposition,
    )


@router.post("/{document_id}/download-url", response_model=DownloadUrlOut, status_code=201)
def create_download_url(
    document_id: str,
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    body: DownloadUrlRequest | None = None,
) -> DownloadUrlOut:
    """A link that downloads one version without a token, until it expires (default 1 h)."""
    require(principal, Permission.CONTENT_READ)
    issued = shares.issue(
        session=session,
        runtime=runtime,
        principal=principal,
        document_id=parse_id(document_id),
        request=body or DownloadUrlRequest(),
        base_url=runtime.settings.public_url or str(request.base_url),
        context=context,
    )
    session.commit()
    return issued


@router.delete("/{document_id}", response_model=DocumentOut)
def delete_document(
    document_id: str,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    reason: Annotated[str, Query(min_length=1, max_length=500, description="Why it is deleted")],
) -> DocumentOut:
    """Soft delete: content answers 410 Gone until the document is restored."""
    require(principal, Permission.DOCUMENT_DELETE)
    deleted = service.soft_delete(
        session=session,
        principal=principal,
        document_id=parse_id(document_id),
        reason=reason.strip(),
        context=context,
    )
    session.commit()
    return deleted


@router.post("/{document_id}/restore", response_model=DocumentOut)
def restore_document(
    document_id: str, session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx
) -> DocumentOut:
    require(principal, Permission.DOCUMENT_DELETE)
    restored = service.restore(
        session=session, principal=principal, document_id=parse_id(document_id), context=context
    )
    session.commit()
    return restored
