"""Documents REST API v1. Thin: parse, authorise, call a service, commit, respond."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from medvault.access.policy import Permission, require, require_upload
from medvault.audit import service as audit
from medvault.db.replica import read_with_fallback
from medvault.deps import (
    AuditCtx,
    ClinicalReplicaSession,
    ClinicalSession,
    CurrentPrincipal,
    RuntimeDep,
    UploadRateLimit,
    declared_length,
)
from medvault.documents import reading, service, upload
from medvault.documents.http_content import Conditions, streamed
from medvault.documents.models import Classification, DocumentStatus
from medvault.documents.ordering import DocumentSort
from medvault.documents.repository import ListFilters
from medvault.documents.schemas import (
    MAX_DB_INT,
    DocumentOut,
    DocumentPage,
    OnDuplicate,
    VersionList,
)
from medvault.kit.i18n import N_
from medvault.kit.ids import parse_id
from medvault.kit.problems import NotFound
from medvault.kit.text import NONBLANK_TEXT_PATTERN
from medvault.kit.timestamps import IsoDateTime
from medvault.search import service as search
from medvault.search.schemas import SearchPage

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
        content_length=declared_length(request),
        query=dict(request.query_params),
    )
    response.headers["Location"] = f"/api/v1/documents/{created.id}"
    return created


_SEARCH_DESCRIPTION = (
    "Full-text search: words to find in titles, descriptions, file names and (when "
    'content indexing is on and you may read content) the documents\' text. `"a phrase"`, '
    "`-excluded`, `a or b`; words match their other forms (`reports` finds `report`). "
    "With `q`, the list is in search mode: ranked by relevance (`sort` is ignored), and "
    "each item carries `rank` and a highlighted `snippet`. "
    "A `q` with no letters or digits to look for is a 400 `invalid-search-text`."
)


@router.get(
    "",
    response_model=DocumentPage | SearchPage,
    responses={400: {"description": "Invalid cursor, or a search with nothing to find"}},
)
def list_documents(
    session: ClinicalReplicaSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    patient_id: Annotated[str | None, Query()] = None,
    document_type: Annotated[str | None, Query(max_length=16)] = None,
    created_after: IsoDateTime | None = None,
    created_before: IsoDateTime | None = None,
    status: Literal["current", "deleted", "all"] = "current",
    q: Annotated[str | None, Query(max_length=200, description=_SEARCH_DESCRIPTION)] = None,
    sort: DocumentSort | Literal["relevance"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> DocumentPage | SearchPage:
    """List documents, or search them (`q`): one route, two modes.

    Without `q`: newest first unless `sort` says otherwise. With `q`: search mode, the
    documents matching the words, best first (then newest), each with `rank` and
    `snippet`. Search is a mode of the list rather than its own endpoint because it is
    the same question (which of my documents, filtered by patient, type, dates and
    status) with a different order: the filters, scoping and paging are the list's.
    Both modes page with keyset cursors: pass `next_cursor` back as `cursor` with the
    same parameters. Search words are never logged or audited in clear.
    """
    require(principal, Permission.DOCUMENT_READ)
    filters = ListFilters(
        patient_id=parse_id(patient_id) if patient_id else None,
        document_type=document_type,
        created_after=_as_utc(created_after),
        created_before=_as_utc(created_before),
        status=None if status == "all" else DocumentStatus(status),
    )

    def read() -> DocumentPage | SearchPage:
        if q is not None and q.strip():
            return search.search_page(
                session=session,
                runtime=runtime,
                principal=principal,
                text=q,
                filters=filters,
                cursor=cursor,
                limit=limit,
                context=context,
            )
        return service.list_page(
            session=session,
            principal=principal,
            filters=filters,
            cursor=cursor,
            limit=limit,
            context=context,
            # "relevance" without words to rank by is the default order.
            order=sort if isinstance(sort, DocumentSort) else DocumentSort.NEWEST,
        )

    result = read_with_fallback(session, read)
    audit.commit_or_refuse(session)
    return result


@router.get("/{document_id}", response_model=DocumentOut)
def get_document(
    document_id: str,
    session: ClinicalReplicaSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> DocumentOut:
    require(principal, Permission.DOCUMENT_READ)
    document = read_with_fallback(
        session,
        lambda: service.get(
            session=session, principal=principal, document_id=parse_id(document_id), context=context
        ),
        miss=(NotFound,),
    )
    audit.commit_or_refuse(session)
    return document


@router.get("/{document_id}/versions", response_model=VersionList)
def list_versions(
    document_id: str,
    session: ClinicalReplicaSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
) -> VersionList:
    require(principal, Permission.DOCUMENT_READ)
    versions = read_with_fallback(
        session,
        lambda: service.list_versions(
            session=session, principal=principal, document_id=parse_id(document_id), context=context
        ),
        miss=(NotFound,),
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
        content_length=declared_length(request),
        query=dict(request.query_params),
        document_id=parse_id(document_id),
    )


Disposition = Annotated[Literal["attachment", "inline"], Query()]


def _serve(
    *,
    number: int | None,
    document_id: str,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    conditions: Conditions,
    disposition: str,
) -> Response:
    require(principal, Permission.CONTENT_READ)
    plan = reading.read_content(
        runtime=runtime,
        context=context,
        authorise=reading.for_principal(principal, parse_id(document_id), number),
        conditions=conditions,
        disposition=disposition,
    )
    return streamed(plan)


@router.get("/{document_id}/content", response_class=StreamingResponse)
def get_content(
    document_id: str,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    conditions: Conditions,
    disposition: Disposition = "attachment",
) -> Response:
    """The current version's bytes. Supports Range (206), If-None-Match (304) and If-Range."""
    return _serve(
        number=None,
        document_id=document_id,
        principal=principal,
        context=context,
        runtime=runtime,
        conditions=conditions,
        disposition=disposition,
    )


@router.get("/{document_id}/versions/{number}/content", response_class=StreamingResponse)
def get_version_content(
    document_id: str,
    number: str,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    conditions: Conditions,
    disposition: Disposition = "attachment",
) -> Response:
    # ASCII digits only ("²".isdigit() is true), and within the column's range: a
    # number no version can have is simply not found, never a driver overflow.
    plausible = number.isascii() and number.isdigit() and len(number) <= len(str(MAX_DB_INT))
    if not plausible or not 1 <= int(number) <= MAX_DB_INT:
        raise NotFound(N_("This document has no such version."))
    return _serve(
        number=int(number),
        document_id=document_id,
        principal=principal,
        context=context,
        runtime=runtime,
        conditions=conditions,
        disposition=disposition,
    )


@router.delete("/{document_id}", response_model=DocumentOut)
def delete_document(
    document_id: str,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    reason: Annotated[
        str,
        Query(
            min_length=1,
            max_length=500,
            pattern=NONBLANK_TEXT_PATTERN,
            description="Why it is deleted",
        ),
    ],
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
