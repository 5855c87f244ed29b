"""The patient picker, a patient's page, registering patients, and break-glass.

Searches are posted, never put in the URL: a patient's name is patient data.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from medvault.access.break_glass import apply_break_glass
from medvault.access.policy import Permission, allows, can_break_glass, require
from medvault.audit import service as audit
from medvault.auth import web_sessions
from medvault.auth.service import commit_with_audit
from medvault.deps import (
    AuthReadSession,
    AuthSession,
    ClinicalSession,
    PatientSession,
    RuntimeDep,
)
from medvault.documents import service as documents
from medvault.documents.repository import ListFilters
from medvault.kit.i18n import gettext as _
from medvault.kit.i18n import ngettext, translate
from medvault.kit.ids import parse_id
from medvault.kit.problems import DuplicatePatient, Problem
from medvault.patients import service as patients
from medvault.patients.schemas import PatientCreate, PatientOut
from medvault.web import list_views, presenters
from medvault.web.scan_status import holds_unscanned, scan_status
from medvault.web.session import (
    CsrfChecked,
    PortalAuditCtx,
    PortalPrincipal,
    PortalSession,
    form_data,
    require_staff,
)
from medvault.web.templating import render

router = APIRouter(include_in_schema=False)
# The list's name in its URL and in the session views that hold its search.
LIST = "patients"

PICKER_LIMIT = 50


def _picker(
    request: Request,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    *,
    text: str = "",
    flash: str | None = None,
    notice: str | None = None,
) -> Response:
    require(principal, Permission.PATIENT_READ)
    require_staff(principal)
    by_identifier = bool(text) and patients.looks_like_identifier(text)
    found = patients.search(
        session=session,
        principal=principal,
        identifier=None,
        limit=PICKER_LIMIT,
        cursor=None,
        context=context,
        name=text if text and not by_identifier else None,
        identifier_value=patients.bare_identifier(text) if by_identifier else None,
    )
    audit.commit_or_refuse(session)
    return render(
        request,
        "patients/list.html",
        {
            "nav": "patients",
            "page_title": _("Patients"),
            "patients": found.items,
            "text": text,
            "searched": bool(text),
            "more": found.next_cursor is not None,
            "can_add": allows(principal, Permission.PATIENT_WRITE),
            "can_break_glass": can_break_glass(principal) and not principal.break_glass_reason,
            "flash": flash,
            "notice": notice,
        },
    )


def _search_text(state: dict[str, Any]) -> str | None:
    text = state.get("text")
    return text if isinstance(text, str) else None


@router.get("/patients")
def patient_list(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    auth_session: AuthReadSession,
    active: PortalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    view: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """The picker; ``view`` names a posted search kept server-side (web.list_views)."""
    if not view:
        return _picker(request, session, principal, context)
    text = list_views.recall(
        runtime=runtime,
        auth_session=auth_session,
        active=active,
        page=LIST,
        view_id=view,
        parse=_search_text,
    )
    if text is None:
        return _picker(request, session, principal, context, notice=list_views.expired_notice())
    return _picker(request, session, principal, context, text=text)


@router.post("/patients")
async def patient_search(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    auth_session: AuthSession,
    active: PortalSession,
    principal: PortalPrincipal,
    _csrf: CsrfChecked,
) -> Response:
    """A name or identifier is patient data: posted, then a 303 to ``?view=<id>``."""
    require(principal, Permission.PATIENT_READ)
    require_staff(principal)
    form = await form_data(request)
    text = " ".join(form.get("text", "").split())[:200]
    return list_views.remember(
        runtime=runtime, auth_session=auth_session, active=active, page=LIST, state={"text": text}
    )


@router.get("/patients/new")
def new_patient_form(request: Request, principal: PortalPrincipal) -> Response:
    require(principal, Permission.PATIENT_WRITE)
    return render(
        request,
        "patients/new.html",
        {"nav": "patients", "page_title": _("Register a patient"), "values": {}, "errors": {}},
    )


_PATIENT_FIELDS = {
    "identifier": "identifier_value",
    "system": "identifier_system",
    "value": "identifier_value",
    "family_name": "family_name",
    "given_name": "given_name",
    "birth_date": "birth_date",
}


def _patient_message(err: Any) -> str:
    """One validation error in the reader's language: Pydantic's own words are English."""
    kind = str(err["type"])
    ctx = err.get("ctx") or {}
    if kind == "string_too_short":
        return ngettext(
            "String should have at least %(num)s character.",
            "String should have at least %(num)s characters.",
            int(ctx.get("min_length", 1)),
        )
    if kind == "string_too_long":
        return ngettext(
            "String should have at most %(num)s character.",
            "String should have at most %(num)s characters.",
            int(ctx.get("max_length", 0)),
        )
    if kind == "missing":
        return _("Field required.")
    if kind.startswith("date_"):
        return _("Input should be a valid date.")
    if kind == "invalid_characters":
        return _("Text may not contain control characters (other than tab and line breaks).")
    # The schema's own checks (patients.schemas) are marked lowercase clauses: each is
    # translated, then written as a sentence.
    message = translate(str(err["msg"]).removeprefix("Value error, "))
    return message[0].upper() + message[1:] + "."


def _patient_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        field = _PATIENT_FIELDS.get(str(err["loc"][-1]) if err["loc"] else "", "__all__")
        errors.setdefault(field, _patient_message(err))
    return errors


@router.post("/patients/new")
async def create_patient(
    request: Request,
    session: ClinicalSession,
    patient_session: PatientSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    require(principal, Permission.PATIENT_WRITE)
    form = await form_data(request)
    values = {key: form.get(key, "").strip() for key in set(_PATIENT_FIELDS.values())}
    errors: dict[str, str] = {}
    try:
        data = PatientCreate.model_validate(
            {
                "identifier": {
                    "system": values["identifier_system"],
                    "value": values["identifier_value"],
                },
                "family_name": values["family_name"],
                "given_name": values["given_name"],
                "birth_date": values["birth_date"] or None,
            }
        )
        patient = patients.create(
            session=session,
            patient_session=patient_session,
            data=data,
            context=context,
            registered_by=principal,
        )
        patients.commit_with_audit(patient_session=patient_session, clinical_session=session)
    except ValidationError as exc:
        errors = _patient_errors(exc)
    except DuplicatePatient:
        session.rollback()
        patient_session.rollback()
        errors = {"identifier_value": _("A patient with this identifier is already registered.")}
    if errors:
        return render(
            request,
            "patients/new.html",
            {
                "nav": "patients",
                "page_title": _("Register a patient"),
                "values": values,
                "errors": errors,
            },
            status_code=422,
        )
    return RedirectResponse(f"/patients/{patient.id}", status_code=303)


@router.get("/patients/{patient_id}")
def patient_page(
    patient_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
) -> Response:
    require(principal, Permission.PATIENT_READ)
    require_staff(principal)
    patient = patients.get(
        session=session, principal=principal, patient_id=parse_id(patient_id), context=context
    )
    out: PatientOut = patients.to_out(patient)
    recent = documents.list_page(
        session=session,
        principal=principal,
        filters=ListFilters(patient_id=patient.id),
        cursor=None,
        limit=25,
        context=context,
    )
    names = presenters.actor_names(runtime, (d.uploaded_by for d in recent.items))
    audit.commit_or_refuse(session)
    content = allows(principal, Permission.CONTENT_READ)
    held = holds_unscanned(runtime)
    rows: list[dict[str, Any]] = [
        {
            "doc": d,
            "type_label": presenters.type_label(d.document_type),
            "uploaded_by": presenters.actor_name(names, d.uploaded_by),
            "thumbnail": presenters.shows_thumbnail(
                d, content=content, readable=scan_status(d.scan, None, blocking=held).readable
            ),
            "file_kind": presenters.file_kind(d.content_type),
        }
        for d in recent.items
    ]
    return render(
        request,
        "patients/detail.html",
        {
            "nav": "patients",
            "page_title": presenters.patient_label(patient),
            "patient": out,
            "label": presenters.patient_label(patient),
            "rows": rows,
            "more": recent.next_cursor is not None,
            "can_write": allows(principal, Permission.DOCUMENT_WRITE),
        },
    )


@router.get("/emergency")
def emergency_form(request: Request, principal: PortalPrincipal) -> Response:
    if not can_break_glass(principal):
        return RedirectResponse("/", status_code=303)
    return render(
        request,
        "patients/emergency.html",
        {"nav": "patients", "page_title": _("Emergency access"), "reason": "", "error": None},
    )


@router.post("/emergency")
async def emergency_start(
    request: Request,
    runtime: RuntimeDep,
    active: PortalSession,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """Break-glass for this session: every later request carries the reason."""
    form = await form_data(request)
    reason = form.get("reason", "")
    widened = None
    message = _("Say why you need emergency access (at least 10 characters).")
    if reason.strip():
        try:
            widened = apply_break_glass(active.principal, reason)
        except Problem as exc:
            message = translate(exc.detail) if exc.detail else message
    if widened is None or widened.break_glass_reason is None:
        return render(
            request,
            "patients/emergency.html",
            {
                "nav": "patients",
                "page_title": _("Emergency access"),
                "reason": reason[:500],
                "error": message,
            },
            status_code=422,
        )
    flagged = replace(context, break_glass_reason=widened.break_glass_reason)
    web_sessions.declare_break_glass(
        auth_session=auth_session,
        clinical_session=clinical_session,
        settings=runtime.settings,
        session_id=active.session_id,
        reason=widened.break_glass_reason,
        context=flagged,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    return RedirectResponse("/patients", status_code=303)


@router.post("/emergency/end")
def emergency_end(
    active: PortalSession,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    web_sessions.end_break_glass(
        auth_session=auth_session,
        clinical_session=clinical_session,
        session_id=active.session_id,
        context=context,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    return RedirectResponse("/patients", status_code=303)
