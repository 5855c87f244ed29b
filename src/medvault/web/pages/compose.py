"""Create Document: a structured form → a server-rendered PDF preview → confirm & upload.

Nothing is stored until "Confirm & upload", and what is stored is exactly what was
previewed: the confirm step renders again and compares the SHA-256 the user saw
(see ``documents.compose.preview`` for why this needs no server-side state).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from medvault.access.policy import Permission, require, require_upload
from medvault.audit import service as audit
from medvault.auth.principal import Principal
from medvault.deps import ClinicalSession, RateLimitsDep, RuntimeDep
from medvault.documents import upload
from medvault.documents.compose import (
    DOCUMENT_TYPES,
    NON_FIELD,
    PDF_CONTENT_TYPE,
    AllergySeverity,
    DocumentTypeOption,
    DraftInvalid,
    PreviewChanged,
    PreviewExpired,
    PreviewStampInvalid,
    RenderedDocument,
    autosave,
    confirm,
    confirmation_fields,
    parse_confirmation,
    parse_form,
    render_preview,
)
from medvault.documents.compose.draft import MAX_ROWS
from medvault.documents.compose.form import ROW_FIELDS, ROW_KEY
from medvault.documents.schemas import OnDuplicate
from medvault.kit.i18n import gettext, translate
from medvault.kit.i18n import gettext as _
from medvault.kit.problems import DuplicateDocument, NotFound
from medvault.patients import service as patients
from medvault.patients.schemas import PatientOut
from medvault.web import presenters
from medvault.web.session import (
    CsrfChecked,
    PortalAuditCtx,
    PortalPrincipal,
    form_data,
    require_staff,
)
from medvault.web.templating import render


def may_compose(principal: PortalPrincipal, runtime: RuntimeDep) -> None:
    """Staff who may file documents; checked once for every step of the flow."""
    require_staff(principal)
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)


router = APIRouter(prefix="/compose", include_in_schema=False, dependencies=[Depends(may_compose)])

SPARE_ROWS = 2
CHUNK = 64 * 1024
# The preview frame shows a PDF the portal itself rendered: only the portal may frame it.
PREVIEW_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; object-src 'self'; frame-ancestors 'self'",
    "X-Frame-Options": "SAMEORIGIN",
    "Content-Disposition": 'inline; filename="preview.pdf"',
}


def _rows_for(values: dict[str, str], name: str, extra: int = 0) -> int:
    """How many rows of a list the form shows: as many as were posted, ``extra`` more.

    The form comes back exactly as the user left it, blank rows included, so adding a
    row in one list (or a validation error) never grows the others. A fresh form shows
    ``SPARE_ROWS``. At most ``MAX_ROWS``, the draft's own limit.
    """
    indexes = [
        int(match.group(2))
        for key in values
        if (match := ROW_KEY.fullmatch(key)) is not None and match.group(1) == name
    ]
    shown = max(indexes) + 1 if indexes else SPARE_ROWS
    return min(shown + extra, MAX_ROWS)


def _form_page(
    request: Request,
    session: ClinicalSession,
    principal: Principal,
    context: PortalAuditCtx,
    *,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    add_row: str | None = None,
    status_code: int = 200,
    notice: str | None = None,
    restored: datetime | None = None,
    waiting: datetime | None = None,
) -> Response:
    choices = presenters.patient_choices(session, principal, context)
    audit.commit_or_refuse(session)
    return render(
        request,
        "compose/form.html",
        {
            "nav": "compose",
            "page_title": _("Create a document"),
            "values": values,
            "errors": errors or {},
            "general_error": (errors or {}).get(NON_FIELD),
            "patients": choices,
            "types": _document_types(),
            "severities": list(AllergySeverity),
            "row_fields": ROW_FIELDS,
            "row_counts": {
                name: _rows_for(values, name, 1 if add_row == name else 0) for name in ROW_FIELDS
            },
            # The list a row was just added to (without JavaScript): its new row takes
            # the focus, and the form's action carries its id so the page scrolls there.
            "added_to": add_row,
            # When an autosaved draft was put back in the form, or is waiting for it.
            "restored_at": restored,
            "waiting_at": waiting,
            "max_rows": MAX_ROWS,
            "notice": notice,
        },
        status_code=status_code,
    )


def _document_types() -> list[DocumentTypeOption]:
    """The form's type choices, each label in the reader's language (the code is data)."""
    return [DocumentTypeOption(option.code, gettext(option.label)) for option in DOCUMENT_TYPES]


def _translated(errors: dict[str, str]) -> dict[str, str]:
    """The draft's mistakes (English from the service) in the reader's language."""
    return {name: translate(text) for name, text in errors.items()}


def _author(principal: Principal) -> str:
    return principal.shown_name


def _patient(
    session: ClinicalSession, principal: Principal, patient_id: uuid.UUID, context: PortalAuditCtx
) -> PatientOut:
    return patients.to_out(
        patients.get(session=session, principal=principal, patient_id=patient_id, context=context)
    )


@router.get("")
def compose_form(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
) -> Response:
    """The form; the author's autosaved draft comes back in it (``compose_drafts``).

    A link for one patient (``?patient=``) opens a fresh form for them when the draft
    is about someone else, and says a draft is waiting; ``?restore=1`` opens the draft.
    """
    require(principal, Permission.PATIENT_READ)
    preselected = request.query_params.get("patient", "")
    values = {"patient_id": preselected} if preselected else {}
    saved = autosave.load(session, keyring=runtime.current_keyring(), user_id=principal.subject_id)
    restored = waiting = None
    if saved is not None:
        same_patient = saved.values.get("patient_id", "") in ("", preselected)
        if not preselected or same_patient or request.query_params.get("restore") == "1":
            values, restored = saved.values, saved.saved_at
        else:
            waiting = saved.saved_at
    return _form_page(
        request, session, principal, context, values=values, restored=restored, waiting=waiting
    )


@router.post("/edit")
async def compose_edit(
    request: Request,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """Back to the form with everything still filled in (also "add a row" without JS)."""
    values = await form_data(request)
    add_row = values.get("add_row")
    return _form_page(
        request,
        session,
        principal,
        context,
        values=values,
        add_row=add_row if add_row in ROW_FIELDS else None,
    )


def _render_draft(
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: Principal,
    context: PortalAuditCtx,
    values: dict[str, str],
) -> RenderedDocument:
    draft = parse_form(values)
    patient = _patient(session, principal, draft.patient_id, context)
    return render_preview(
        draft=draft,
        patient=patient,
        author_name=_author(principal),
        vault_name=runtime.settings.portal_name,
    )


@router.post("/preview")
async def compose_preview(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    values = await form_data(request)
    try:
        rendered = _render_draft(runtime, session, principal, context, values)
    except DraftInvalid as exc:
        return _form_page(
            request,
            session,
            principal,
            context,
            values=values,
            errors=_translated(exc.field_errors),
            status_code=422,
        )
    except NotFound:
        session.rollback()
        return _form_page(
            request,
            session,
            principal,
            context,
            values=values,
            errors={"patient_id": _("Choose one of your patients.")},
            status_code=422,
        )
    audit.commit_or_refuse(session)
    return render(
        request,
        "compose/preview.html",
        {
            "nav": "compose",
            "page_title": _("Check the document"),
            "fields": confirmation_fields(rendered),
            "rendered": rendered,
            "size": len(rendered.pdf),
        },
    )


@router.post("/pdf")
async def compose_pdf(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """The preview PDF itself, posted into the preview frame (no draft data in any URL)."""
    values = await form_data(request)
    confirmation = parse_confirmation(values)
    patient = _patient(session, principal, confirmation.draft.patient_id, context)
    audit.commit_or_refuse(session)
    rendered = confirm(
        confirmation,
        patient=patient,
        author_name=_author(principal),
        vault_name=runtime.settings.portal_name,
    )
    return Response(rendered.pdf, media_type=PDF_CONTENT_TYPE, headers=PREVIEW_HEADERS)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


@router.post("/confirm")
async def compose_confirm(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    limits: RateLimitsDep,
    _csrf: CsrfChecked,
) -> Response:
    """Store exactly the previewed bytes, through the same upload pipeline as the API."""
    values = await form_data(request)
    try:
        confirmation = parse_confirmation(values)
        patient = _patient(session, principal, confirmation.draft.patient_id, context)
        session.commit()
        rendered = confirm(
            confirmation,
            patient=patient,
            author_name=_author(principal),
            vault_name=runtime.settings.portal_name,
        )
    except (PreviewExpired, PreviewChanged, PreviewStampInvalid, DraftInvalid) as exc:
        session.rollback()
        return _form_page(
            request,
            session,
            principal,
            context,
            values=values,
            errors={NON_FIELD: translate(exc.detail or exc.title)},
            status_code=409 if isinstance(exc, PreviewExpired | PreviewChanged) else 422,
        )
    limits.hit_upload(actor_id=principal.actor_id)
    # A PDF we rendered ourselves, at most a few hundred KB (the draft's bounds cap it):
    # it is already in memory, and the pipeline still streams it in chunks.
    try:
        created = await upload.upload(
            runtime=runtime,
            principal=principal,
            context=context,
            body=_chunks(rendered.pdf),
            content_type=PDF_CONTENT_TYPE,
            content_length=len(rendered.pdf),
            query={
                "patient_id": str(rendered.draft.patient_id),
                "document_type": rendered.draft.document_type,
                "title": rendered.draft.title,
                "filename": rendered.filename,
                "on_duplicate": OnDuplicate.REJECT.value,
            },
        )
    except DuplicateDocument as exc:
        existing = exc.extensions.get("existing_document_id")
        return RedirectResponse(f"/documents/{existing}", status_code=303)
    # Stored: the autosaved draft has done its job.
    autosave.discard(session, user_id=principal.subject_id)
    session.commit()
    return RedirectResponse(f"/documents/{created.id}?created=1", status_code=303)
