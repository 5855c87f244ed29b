"""Administration: users and roles, and care teams."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from medvault.access import careteams
from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.auth import users
from medvault.auth.principal import Role
from medvault.auth.service import commit_with_audit
from medvault.deps import AuthSession, ClinicalSession
from medvault.kit.i18n import gettext as _
from medvault.kit.i18n import translate
from medvault.kit.ids import parse_id
from medvault.kit.problems import Problem
from medvault.web import presenters
from medvault.web.session import CsrfChecked, PortalAuditCtx, PortalPrincipal, form_data
from medvault.web.templating import render


def admins_only(principal: PortalPrincipal) -> None:
    require(principal, Permission.USERS_ADMIN)


# Every page here is an administrator's: checked once for the whole router.
router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(admins_only)])

ROLE_CHOICES = (Role.CLINICIAN, Role.PATIENT, Role.ADMIN, Role.AUDITOR)


def _users_page(
    request: Request,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    *,
    values: dict[str, str] | None = None,
    error: str | None = None,
    flash: str | None = None,
) -> Response:
    everyone = users.list_users(session=auth_session)
    choices = presenters.patient_choices(clinical_session, principal, context)
    audit.commit_or_refuse(clinical_session)
    labels = {choice["id"]: choice["label"] for choice in choices}
    return render(
        request,
        "admin/users.html",
        {
            "nav": "users",
            "page_title": _("Users"),
            "users": everyone,
            "patient_labels": labels,
            "patients": choices,
            "roles": ROLE_CHOICES,
            "values": values or {},
            "error": error,
            "flash": flash,
        },
        status_code=422 if error else 200,
    )


@router.get("/users")
def users_page(
    request: Request,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
) -> Response:
    return _users_page(request, auth_session, clinical_session, principal, context)


@router.post("/users")
async def create_user(
    request: Request,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    form = await form_data(request)
    fields = ("username", "email", "role", "patient_id", "display_name", "profession")
    values = {k: form.get(k, "").strip() for k in fields}
    try:
        role = Role(values["role"])
        patient_id = uuid.UUID(values["patient_id"]) if values["patient_id"] else None
        if role is not Role.PATIENT:
            patient_id = None  # the select keeps its value when the role changes
        user = users.create(
            auth_session=auth_session,
            clinical_session=clinical_session,
            username=values["username"],
            email=values["email"],
            password=form.get("password", ""),
            role=role,
            patient_id=patient_id,
            context=context,
            display_name=values["display_name"],
            profession=values["profession"],
        )
        commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    except ValueError:
        return _users_page(
            request,
            auth_session,
            clinical_session,
            principal,
            context,
            values=values,
            error=_("Choose a role, and for a patient user the patient record."),
        )
    except Problem as exc:
        if exc.status >= 500:
            raise
        auth_session.rollback()
        clinical_session.rollback()
        return _users_page(
            request,
            auth_session,
            clinical_session,
            principal,
            context,
            values=values,
            error=translate(exc.detail or exc.title),
        )
    return _users_page(
        request,
        auth_session,
        clinical_session,
        principal,
        context,
        flash=_(
            "User %(username)s was created. Give them their password in person.",
            username=user.username,
        ),
    )


@router.post("/users/{user_id}/disable")
def disable_user(
    user_id: str,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """Lock the user out at once: their portal sessions and API tokens stop working."""
    users.disable(
        auth_session=auth_session,
        clinical_session=clinical_session,
        user_id=parse_id(user_id),
        context=context,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/users/{user_id}/profile")
async def set_profile(
    user_id: str,
    request: Request,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """The name and profession everyone sees instead of the username."""
    form = await form_data(request)
    try:
        user = users.set_profile(
            auth_session=auth_session,
            clinical_session=clinical_session,
            user_id=parse_id(user_id),
            display_name=form.get("display_name", ""),
            profession=form.get("profession", ""),
            context=context,
        )
        commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    except users.InvalidUser as exc:
        auth_session.rollback()
        clinical_session.rollback()
        return _users_page(
            request,
            auth_session,
            clinical_session,
            principal,
            context,
            error=translate(exc.detail or exc.title),
        )
    return _users_page(
        request,
        auth_session,
        clinical_session,
        principal,
        context,
        flash=_(
            "%(username)s is now shown as “%(label)s”.", username=user.username, label=user.label
        ),
    )


@router.post("/users/{user_id}/enable")
def enable_user(
    user_id: str,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    users.enable(
        auth_session=auth_session,
        clinical_session=clinical_session,
        user_id=parse_id(user_id),
        context=context,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    return RedirectResponse("/admin/users", status_code=303)


def _care_teams_page(
    request: Request,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    *,
    error: str | None = None,
    flash: str | None = None,
) -> Response:
    entries = careteams.list_members(clinical_session=clinical_session, auth_session=auth_session)
    choices = presenters.patient_choices(clinical_session, principal, context)
    audit.commit_or_refuse(clinical_session)
    labels = {choice["id"]: choice["label"] for choice in choices}
    clinicians = [
        u for u in users.list_users(session=auth_session, role=Role.CLINICIAN) if not u.disabled_at
    ]
    return render(
        request,
        "admin/care_teams.html",
        {
            "nav": "care-teams",
            "page_title": _("Care teams"),
            "entries": entries,
            "patient_labels": labels,
            "patients": choices,
            "clinicians": clinicians,
            "error": error,
            "flash": flash,
        },
        status_code=422 if error else 200,
    )


@router.get("/care-teams")
def care_teams_page(
    request: Request,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
) -> Response:
    return _care_teams_page(request, auth_session, clinical_session, principal, context)


@router.post("/care-teams")
async def add_member(
    request: Request,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    form = await form_data(request)
    try:
        clinician_id = uuid.UUID(form.get("clinician_id", ""))
        patient_id = uuid.UUID(form.get("patient_id", ""))
    except ValueError:
        return _care_teams_page(
            request,
            auth_session,
            clinical_session,
            principal,
            context,
            error=_("Choose a clinician and a patient."),
        )
    try:
        entry, created = careteams.add(
            clinical_session=clinical_session,
            auth_session=auth_session,
            clinician_id=clinician_id,
            patient_id=patient_id,
            context=context,
        )
        audit.commit_or_refuse(clinical_session)
    except Problem as exc:
        if exc.status >= 500:
            raise
        clinical_session.rollback()
        return _care_teams_page(
            request,
            auth_session,
            clinical_session,
            principal,
            context,
            error=translate(exc.detail or exc.title),
        )
    message = (
        _("%(username)s now cares for this patient.", username=entry.clinician_username)
        if created
        else _("%(username)s was already on this care team.", username=entry.clinician_username)
    )
    return _care_teams_page(
        request, auth_session, clinical_session, principal, context, flash=message
    )


@router.post("/care-teams/remove")
async def remove_member(
    request: Request,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    form = await form_data(request)
    careteams.remove(
        clinical_session=clinical_session,
        clinician_id=parse_id(form.get("clinician_id", "")),
        patient_id=parse_id(form.get("patient_id", "")),
        context=context,
    )
    audit.commit_or_refuse(clinical_session)
    return RedirectResponse("/admin/care-teams", status_code=303)
