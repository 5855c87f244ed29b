"""My Documents: the table, one document's page, its content, delete and share links.

Every handler calls the same services as the REST API, with the portal user's
principal, so the access policy and the audit trail are exactly the REST ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, RedirectResponse, Response

from medvault.access.policy import Permission, allows, require
from medvault.audit import service as audit
from medvault.auth import session_views
from medvault.auth.principal import Role
from medvault.deps import AuthReadSession, AuthSession, ClinicalSession, RuntimeDep
from medvault.documents import reading, service
from medvault.documents.http_content import Conditions, streamed
from medvault.documents.ordering import DocumentSort
from medvault.documents.schemas import DocumentOut, DocumentPage, DownloadUrlRequest
from medvault.kit.i18n import N_, gettext, translate
from medvault.kit.i18n import gettext as _
from medvault.kit.ids import parse_id
from medvault.kit.keyset import InvalidCursor
from medvault.runtime import Runtime
from medvault.search import service as search
from medvault.search.schemas import SearchPage, SnippetSegment
from medvault.search.terms import InvalidSearchText
from medvault.shares import service as shares
from medvault.web import list_views, presenters
from medvault.web.listing import PAGE_SIZE, DocumentQuery
from medvault.web.pages import resumable
from medvault.web.scan_status import (
    active_content_notes,
    has_active_content,
    holds_unscanned,
    scan_status,
)
from medvault.web.session import (
    CsrfChecked,
    PortalAuditCtx,
    PortalPrincipal,
    PortalSession,
    form_data,
    viewer_zone,
)
from medvault.web.templating import render

router = APIRouter(include_in_schema=False)
# The list's name in its URL and in the session views that hold its filters.
LIST = "documents"

# Inline views are opened as a page of their own (the browser's PDF viewer) or shown
# in an <img>; nothing in them may run script, and only the portal may frame them.
VIEW_CSP = "default-src 'none'; img-src 'self'; object-src 'self'; frame-ancestors 'self'"
INLINE_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg"})

SORT_LABELS = {
    DocumentSort.NEWEST: N_("Newest first"),
    DocumentSort.OLDEST: N_("Oldest first"),
    DocumentSort.TITLE: N_("Title A to Z"),
    DocumentSort.TITLE_DESC: N_("Title Z to A"),
    DocumentSort.LARGEST: N_("Largest first"),
    DocumentSort.SMALLEST: N_("Smallest first"),
    DocumentSort.TYPE: N_("Type"),
}


def sort_labels() -> dict[DocumentSort, str]:
    """The sort choices in the reader's language."""
    return {sort: gettext(label) for sort, label in SORT_LABELS.items()}


def _rows(
    runtime: Runtime, session: ClinicalSession, principal: PortalPrincipal, items: list[DocumentOut]
) -> list[dict[str, Any]]:
    names = presenters.actor_names(runtime, (item.uploaded_by for item in items))
    people = presenters.readable_patients_by_id(
        session, principal, (item.patient_id for item in items)
    )
    blocking = holds_unscanned(runtime)
    content = allows(principal, Permission.CONTENT_READ)
    rows = []
    for item in items:
        scan = scan_status(item.scan, None, blocking=blocking)
        rows.append(
            {
                "doc": item,
                "type_label": presenters.type_label(
                    item.document_type, for_patient=principal.role is Role.PATIENT
                ),
                "uploaded_by": presenters.actor_name(names, item.uploaded_by),
                "patient": presenters.patient_label(people.get(item.patient_id)),
                "scan": scan,
                "active_content": has_active_content(item.active_content),
                "thumbnail": presenters.shows_thumbnail(
                    item, content=content, readable=scan.readable
                ),
                "file_kind": presenters.file_kind(item.content_type),
            }
        )
    return rows


def _list_page(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    query: DocumentQuery,
    errors: list[str] | None = None,
    *,
    view_id: str | None = None,
    notice: str | None = None,
    last_visit: datetime | None = None,
    focus: str | None = None,
) -> Response:
    require(principal, Permission.DOCUMENT_READ)
    page: DocumentPage | SearchPage
    snippets: list[list[SnippetSegment]] = []
    # Set when a search matched more than it ranks: the window it ranked.
    unranked_beyond: int | None = None
    if query.q:
        # Search mode: ranked by relevance whatever the sort says, with snippets.
        try:
            page = search.search_page(
                session=session,
                runtime=runtime,
                principal=principal,
                text=query.q,
                filters=query.filters(viewer_zone(request)),
                cursor=query.cursor or None,
                limit=PAGE_SIZE,
                context=context,
            )
        except (InvalidSearchText, InvalidCursor) as problem:
            session.rollback()
            page = DocumentPage(items=[], next_cursor=None)
            errors = [
                *(errors or []),
                _(
                    "The search text: %(problem)s",
                    problem=translate(problem.detail or problem.title),
                ),
            ]
        else:
            snippets = [hit.snippet for hit in page.items]
            if page.older_matches_unranked:
                unranked_beyond = page.rank_window
    else:
        page = service.list_page(
            session=session,
            principal=principal,
            filters=query.filters(viewer_zone(request)),
            cursor=query.cursor or None,
            limit=PAGE_SIZE,
            context=context,
            order=query.sort,
        )
    rows = _rows(runtime, session, principal, list(page.items))
    for row, snippet in zip(rows, snippets, strict=False):
        row["snippet"] = snippet
    for row in rows:
        # "New": stored since the user's last visit (their previous session's last activity).
        row["new"] = last_visit is not None and row["doc"].created_at > last_visit
    audit.commit_or_refuse(session)
    return render(
        request,
        "documents/list.html",
        {
            "nav": "documents",
            "page_title": _("My documents") if principal.role is Role.PATIENT else _("Documents"),
            "rows": rows,
            "query": query,
            "next_cursor": page.next_cursor,
            "unranked_beyond": unranked_beyond,
            "errors": errors or [],
            "view_id": view_id,
            "notice": notice,
            "focus": focus,
            "types": presenters.type_choices(for_patient=principal.role is Role.PATIENT),
            "sorts": sort_labels(),
            "inline_types": INLINE_TYPES,
            "show_patient": principal.role is not Role.PATIENT,
            "can_see_deleted": allows(principal, Permission.DOCUMENT_DELETE),
            "can_bulk": allows(principal, Permission.CONTENT_READ),
            "can_upload": allows(principal, Permission.DOCUMENT_WRITE)
            and (principal.role is not Role.PATIENT or runtime.settings.patient_self_upload),
        },
        status_code=422 if errors else 200,
    )


@router.get("/documents")
def documents_page(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    auth_session: AuthReadSession,
    active: PortalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    view: Annotated[str, Query(max_length=64)] = "",
    focus: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    """The table; ``view`` names filters a posted search kept server-side (list_views)."""
    query, notice = DocumentQuery(), None
    if view:
        kept = list_views.recall(
            runtime=runtime,
            auth_session=auth_session,
            active=active,
            page=LIST,
            view_id=view,
            parse=DocumentQuery.from_state,
        )
        if kept is None:
            view, notice = "", list_views.expired_notice()
        else:
            query = kept
    return _list_page(
        request,
        runtime,
        session,
        principal,
        context,
        query,
        view_id=view or None,
        notice=notice,
        last_visit=active.previous_visit_at,
        focus=list_views.focus_target(focus),
    )


@router.post("/documents")
async def documents_search(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    auth_session: AuthSession,
    active: PortalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """Filters, sort and paging: posted, then a 303 to ``?view=<id>`` (never the words)."""
    # Refused before anything is kept: who may not list documents keeps no view of them.
    require(principal, Permission.DOCUMENT_READ)
    form = await form_data(request)
    try:
        query = DocumentQuery.from_form(form)
    except ValidationError as exc:
        errors = [_plain(err) for err in exc.errors()]
        return _list_page(
            request, runtime, session, principal, context, DocumentQuery(), errors=errors
        )
    return list_views.remember(
        runtime=runtime,
        auth_session=auth_session,
        active=active,
        page=LIST,
        state=query.model_dump(mode="json"),
        focus=request.query_params.get("focus"),
    )


def _plain(error: Any) -> str:
    field = {
        "uploaded_from": _("The 'from' date"),
        "uploaded_to": _("The 'to' date"),
        "document_type": _("The document type"),
        "q": _("The search text"),
    }.get(str(error["loc"][0]) if error["loc"] else "", "")
    # Pydantic's own words stay English; the query's own messages (listing) translate.
    message = translate(str(error["msg"]).removeprefix("Value error, "))
    return _("%(field)s: %(message)s", field=field, message=message) if field else message


@router.get("/documents/{document_id}")
def document_page(
    document_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    # The list view the user came from, so "← All documents" returns to its filters.
    from_view: Annotated[str, Query(alias="from", max_length=64)] = "",
) -> Response:
    require(principal, Permission.DOCUMENT_READ)
    parsed = parse_id(document_id)
    document = service.get(
        session=session, principal=principal, document_id=parsed, context=context
    )
    versions = service.list_versions(
        session=session, principal=principal, document_id=parsed, context=context
    )
    authored = service.authorship(session=session, principal=principal, document_id=parsed)
    # Each version with its own uploader and time; the document's creator with its creation.
    current = next((v for v in versions.items if v.version == document.version), None)
    names = presenters.actor_names(
        runtime,
        [authored.created_by, *(v.uploaded_by for v in versions.items)]
        + ([document.deleted_by] if document.deleted_by else []),
    )
    patient = presenters.readable_patients_by_id(session, principal, [document.patient_id])
    audit.commit_or_refuse(session)
    can_read_content = allows(principal, Permission.CONTENT_READ)
    # The same authorship rule (access.authorship) that refuses the upload at POST, so
    # a patient is never shown a form onto a clinician's letter.
    can_upload = (
        allows(principal, Permission.DOCUMENT_WRITE)
        and (principal.role is not Role.PATIENT or runtime.settings.patient_self_upload)
        and authored.may_change
    )
    blocking = holds_unscanned(runtime)
    status = scan_status(
        current.scan if current else document.scan,
        current.state if current else None,
        blocking=blocking,
        can_upload=can_upload and document.status != "deleted",
    )
    return render(
        request,
        "documents/detail.html",
        {
            "nav": "documents",
            "page_title": document.title,
            "doc": document,
            "back_to": (
                f"/{LIST}?view={from_view}" if session_views.is_view_id(from_view) else f"/{LIST}"
            ),
            "versions": [
                (v, scan_status(v.scan, v.state, blocking=blocking)) for v in versions.items
            ],
            "scan": status,
            "active_content": active_content_notes(document.active_content),
            "active_content_found": has_active_content(document.active_content),
            "names": names,
            "name_of": presenters.actor_name,
            "type_label": presenters.type_label(
                document.document_type, for_patient=principal.role is Role.PATIENT
            ),
            "patient": presenters.patient_label(patient.get(document.patient_id)),
            "deleted": document.status == "deleted",
            "can_read_content": can_read_content,
            "readable": can_read_content and status.readable,
            "inline": can_read_content
            and status.readable
            and document.content_type in INLINE_TYPES,
            "is_image": document.content_type.startswith("image/"),
            "file_kind": presenters.file_kind(document.content_type),
            "file_kind_words": presenters.file_kind_words(document.content_type),
            "preview_alt": _("First page of %(title)s", title=document.title),
            "preview_note": presenters.preview_note(
                document.derived.preview,
                document.derived.preview_reason,
                readable=status.readable,
            ),
            "text_note": presenters.text_note(
                document.derived.text, document.derived.text_source, document.derived.text_reason
            ),
            "created": authored,
            "current": current,
            # Offered only where the upload would be accepted.
            "can_upload": can_upload,
            "can_delete": allows(principal, Permission.DOCUMENT_DELETE),
            "max_upload_bytes": runtime.settings.max_upload_bytes,
            "allowed_types": runtime.settings.allowed_types,
            "resumable": resumable.uploader_options(),
        },
    )


def _content(
    document_id: str,
    version: int | None,
    disposition: Literal["attachment", "inline"],
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    runtime: RuntimeDep,
    conditions: Conditions,
) -> Response:
    require(principal, Permission.CONTENT_READ)
    plan = reading.read_content(
        runtime=runtime,
        context=context,
        authorise=reading.for_principal(principal, parse_id(document_id), version),
        conditions=conditions,
        disposition=disposition,
    )
    response = streamed(plan)
    if disposition == "inline":
        response.headers["Content-Security-Policy"] = VIEW_CSP
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


VersionParam = Annotated[int | None, Query(ge=1)]


@router.get("/documents/{document_id}/download")
def download(
    document_id: str,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    runtime: RuntimeDep,
    conditions: Conditions,
    version: VersionParam = None,
) -> Response:
    return _content(document_id, version, "attachment", principal, context, runtime, conditions)


@router.get("/documents/{document_id}/view")
def view(
    document_id: str,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    runtime: RuntimeDep,
    conditions: Conditions,
    version: VersionParam = None,
) -> Response:
    """Inline, for the browser's PDF viewer and <img>; other types download instead."""
    return _content(document_id, version, "inline", principal, context, runtime, conditions)


@router.get("/documents/{document_id}/delete")
def delete_confirm(
    document_id: str,
    request: Request,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
) -> Response:
    """The confirmation step without JavaScript (with it, a dialog shows the same form)."""
    require(principal, Permission.DOCUMENT_DELETE)
    document = service.get(
        session=session, principal=principal, document_id=parse_id(document_id), context=context
    )
    audit.commit_or_refuse(session)
    return render(
        request,
        "documents/delete.html",
        {
            "nav": "documents",
            "page_title": _("Delete %(title)s", title=document.title),
            "doc": document,
        },
    )


@router.post("/documents/{document_id}/delete")
async def delete(
    document_id: str,
    request: Request,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    require(principal, Permission.DOCUMENT_DELETE)
    form = await form_data(request)
    reason = form.get("reason", "").strip()
    parsed = parse_id(document_id)
    if not 3 <= len(reason) <= 500:
        document = service.get(
            session=session, principal=principal, document_id=parsed, context=context
        )
        audit.commit_or_refuse(session)
        return render(
            request,
            "documents/delete.html",
            {
                "nav": "documents",
                "page_title": _("Delete %(title)s", title=document.title),
                "doc": document,
                "error": _("Say briefly why this document is being deleted (3 to 500 characters)."),
                "reason": reason,
            },
            status_code=422,
        )
    service.soft_delete(
        session=session, principal=principal, document_id=parsed, reason=reason, context=context
    )
    session.commit()
    return RedirectResponse(f"/documents/{parsed}?deleted=1", status_code=303)


@router.post("/documents/{document_id}/restore")
def restore(
    document_id: str,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    require(principal, Permission.DOCUMENT_DELETE)
    parsed = parse_id(document_id)
    service.restore(session=session, principal=principal, document_id=parsed, context=context)
    session.commit()
    return RedirectResponse(f"/documents/{parsed}?restored=1", status_code=303)


@router.post("/documents/{document_id}/link")
async def share_link(
    document_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """A time-limited download link: JSON for the page's copy button, a page otherwise."""
    require(principal, Permission.CONTENT_READ)
    form = await form_data(request) if "form" in request.headers.get("content-type", "") else {}
    minutes = form.get("minutes", "")
    expires_in = (
        int(minutes) * 60
        if minutes.isascii() and minutes.isdigit() and 0 < int(minutes) <= 1440
        else None
    )
    issued = shares.issue(
        session=session,
        runtime=runtime,
        principal=principal,
        document_id=parse_id(document_id),
        request=DownloadUrlRequest(expires_in=expires_in),
        base_url=runtime.settings.public_url or str(request.base_url),
        context=context,
    )
    session.commit()
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(
            {"url": issued.url, "expires_at": issued.expires_at.isoformat()},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )
    return render(
        request,
        "documents/link.html",
        {
            "nav": "documents",
            "page_title": _("Download link"),
            "link": issued,
            "doc_id": document_id,
        },
        status_code=201,
    )
