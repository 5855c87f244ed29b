"""A patient's timeline: their documents by month and type (``web.timeline_groups``)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.auth.principal import Role
from medvault.deps import ClinicalSession
from medvault.documents import service as documents
from medvault.documents.repository import ListFilters
from medvault.kit.i18n import N_
from medvault.kit.i18n import gettext as _
from medvault.kit.ids import parse_id
from medvault.kit.problems import Forbidden
from medvault.patients import service as patients
from medvault.web import presenters, timeline_groups
from medvault.web.session import PortalAuditCtx, PortalPrincipal, require_staff, viewer_zone
from medvault.web.templating import render

router = APIRouter(include_in_schema=False)

# The newest this many: a timeline is for reading, and the documents list searches the
# rest. The page says when there are more.
TIMELINE_LIMIT = 200


def _timeline(
    request: Request,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    patient_id: uuid.UUID,
    *,
    staff: bool,
) -> Response:
    require(principal, Permission.DOCUMENT_READ)
    patient = patients.get(
        session=session, principal=principal, patient_id=patient_id, context=context
    )
    page = documents.list_page(
        session=session,
        principal=principal,
        filters=ListFilters(patient_id=patient.id),
        cursor=None,
        limit=TIMELINE_LIMIT,
        context=context,
    )
    audit.commit_or_refuse(session)
    for_patient = principal.role is Role.PATIENT
    months = timeline_groups.group(
        page.items,
        zone=viewer_zone(request),
        type_label=lambda code: presenters.type_label(code, for_patient=for_patient),
    )
    label = presenters.patient_label(patient)
    return render(
        request,
        "patients/timeline.html",
        {
            "nav": "patients" if staff else "timeline",
            "page_title": _("Timeline: %(label)s", label=label) if staff else _("My timeline"),
            "label": label,
            "patient_id": patient.id,
            "staff": staff,
            "months": months,
            "more": page.next_cursor is not None,
            "limit": TIMELINE_LIMIT,
        },
    )


@router.get("/patients/{patient_id}/timeline")
def patient_timeline(
    patient_id: str,
    request: Request,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
) -> Response:
    require(principal, Permission.PATIENT_READ)
    require_staff(principal)
    return _timeline(request, session, principal, context, parse_id(patient_id), staff=True)


@router.get("/timeline")
def my_timeline(
    request: Request,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
) -> Response:
    """A patient's own timeline: their record is the only one, so no id in the URL."""
    if principal.role is not Role.PATIENT or principal.patient_id is None:
        raise Forbidden(N_("Only patients have a timeline of their own; staff open a patient's."))
    return _timeline(request, session, principal, context, principal.patient_id, staff=False)
