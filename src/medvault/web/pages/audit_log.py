"""The auditor's log browser: events newest first, filtered by people, not ids.

The filter form is posted and resolved server-side (``web.audit_filters``): a patient
by name or identifier, a user by username, "emergency access only", "hide my own
reads". The resolved filters sit behind ``/audit?view=<id>`` (``web.list_views``), so
Back and reload work and no name reaches a URL. A row's patient link still names the
patient by id only (``/audit?patient_id=…``), as every portal link does.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from medvault.access.audit_reach import require_whole_log
from medvault.audit import patient_lookup, queries
from medvault.audit import service as audit
from medvault.deps import AuthReadSession, AuthSession, ClinicalSession, RuntimeDep
from medvault.kit.i18n import gettext as _
from medvault.kit.problems import NotFound
from medvault.runtime import Runtime
from medvault.web import list_views, presenters
from medvault.web.audit_filters import AuditFilterState, resolve
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

PAGE_SIZE = 50
# The list's name in its URL and in the session views that hold its filters.
LIST = "audit"


def _events_page(
    request: Request,
    runtime: Runtime,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    state: AuditFilterState,
    *,
    view_id: str | None = None,
    cursor: str | None = None,
    errors: list[str] | None = None,
    choices: list[patient_lookup.PatientRef] | None = None,
    notice: str | None = None,
    typed: AuditFilterState | None = None,
    patient_text: str = "",
) -> Response:
    page = queries.list_events(
        session=session,
        principal=principal,
        context=context,
        filters=state.event_filters(principal, viewer_zone(request)),
        cursor=cursor,
        limit=PAGE_SIZE,
    )
    patients = patient_lookup.names(
        session=session,
        principal=principal,
        patient_ids={event.patient_id for event in page.items if event.patient_id},
    )
    try:
        checkpoint: Any = queries.latest_checkpoint(
            session=session, context=context, key=runtime.audit_key
        )
    except NotFound:
        checkpoint = None
    audit.commit_or_refuse(session)
    return render(
        request,
        "audit/events.html",
        {
            "nav": "audit",
            "page_title": _("Audit log"),
            "events": page.items,
            "names": presenters.actor_names(runtime, (event.actor_id for event in page.items)),
            "name_of": presenters.actor_name,
            "patients": patients,
            "next_cursor": page.next_cursor,
            "state": state,
            # What the form shows: the filters in use, or what was typed when refused.
            "form": typed or state,
            "patient_text": patient_text or (typed or state).patient_label,
            "view_id": view_id,
            "checkpoint": checkpoint,
            "errors": errors or [],
            "choices": choices or [],
            "notice": notice,
            "focus": list_views.focus_target(request.query_params.get("focus")),
        },
        status_code=422 if errors else 200,
    )


@router.get("/audit")
def audit_page(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    auth_session: AuthReadSession,
    active: PortalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    view: Annotated[str, Query(max_length=64)] = "",
    # A row's patient link: an id, never a name.
    patient_id: Annotated[str, Query(max_length=64)] = "",
    # An event id, from "Older events".
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    require_whole_log(principal)
    state, notice = AuditFilterState(), None
    if view:
        restored = list_views.recall(
            runtime=runtime,
            auth_session=auth_session,
            active=active,
            page=LIST,
            view_id=view,
            parse=AuditFilterState.from_state,
        )
        if restored is None:
            view, notice = "", list_views.expired_notice()
        else:
            state = restored
    elif patient_id:
        try:
            wanted = uuid.UUID(patient_id)
        except ValueError:
            return _events_page(
                request, runtime, session, principal, context, state,
                errors=[_("The patient id is not a valid id.")],
            )  # fmt: skip
        labels = patient_lookup.names(session=session, principal=principal, patient_ids=[wanted])
        state.patient_id, state.patient_label = str(wanted), labels.get(wanted, str(wanted))
    return _events_page(
        request,
        runtime,
        session,
        principal,
        context,
        state,
        view_id=view or None,
        cursor=cursor or None,
        notice=notice,
    )


@router.post("/audit")
async def audit_filter(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    auth_session: AuthSession,
    active: PortalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """Resolve the people typed into ids, keep the filters, 303 to ``?view=<id>``."""
    require_whole_log(principal)
    form = await form_data(request)
    resolved = resolve(form, runtime=runtime, session=session, principal=principal, context=context)
    if resolved.errors:
        # Nothing is kept; the form comes back as typed, the log unfiltered below it. The
        # lookup was audited all the same, even when it found nobody or too many.
        return _events_page(
            request,
            runtime,
            session,
            principal,
            context,
            AuditFilterState(),
            errors=resolved.errors,
            choices=resolved.choices,
            typed=resolved.state,
            patient_text=" ".join(form.get("patient", "").split())[:200],
        )
    audit.commit_or_refuse(session)
    return list_views.remember(
        runtime=runtime,
        auth_session=auth_session,
        active=active,
        page=LIST,
        state=resolved.state.to_state(),
        focus=request.query_params.get("focus"),
    )
