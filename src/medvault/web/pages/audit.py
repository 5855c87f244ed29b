"""Audit pages: the auditor's event browser, checkpoint and "verify now", and a
patient's "Who viewed my documents" (their record's access history)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from medvault.access.audit_reach import own_patient, require_audit_events, require_whole_log
from medvault.access.denials import Denial, denied
from medvault.audit import queries
from medvault.audit import service as audit
from medvault.audit.verify_job import MAX_ATTEMPTS as VERIFY_ATTEMPTS
from medvault.deps import AuthReadSession, ClinicalSession
from medvault.kit.i18n import N_
from medvault.kit.i18n import gettext as _
from medvault.kit.ids import parse_id
from medvault.kit.problems import Forbidden, NotFound
from medvault.processing import kinds, queue
from medvault.processing.models import Job
from medvault.web.session import CsrfChecked, PortalAuditCtx, PortalPrincipal
from medvault.web.templating import render
from medvault.web.verify_view import verify_view

router = APIRouter(prefix="/audit", include_in_schema=False)

PAGE_SIZE = 50
# One verification at a time, whoever asks: a second request joins the running one.
VERIFY_DEDUPE_KEY = "audit-verify"
REFRESH_SECONDS = 2


@router.get("/access-history")
def access_history_page(
    request: Request,
    session: ClinicalSession,
    auth_session: AuthReadSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    # The page's own cursor (an event id), never a patient id: the record is the caller's.
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """Who viewed my documents: the events about the patient's own record, newest first."""
    require_audit_events(principal)
    patient_id = own_patient(principal)
    if patient_id is None:
        problem = Forbidden(N_("This page shows a patient who opened their record."))
        raise denied(problem, Denial(principal, permission="audit:read"))
    page = queries.access_history(
        session=session,
        auth_session=auth_session,
        principal=principal,
        context=context,
        patient_id=patient_id,
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    audit.commit_or_refuse(session)
    return render(
        request,
        "audit/access_history.html",
        {
            "nav": "access-history",
            "page_title": _("Who viewed my documents"),
            # Worded by the service in this request's language (the API's stay English).
            "entries": page.items,
            "next_cursor": page.next_cursor,
            "first_page": cursor is None,
        },
    )


@router.post("/verify")
def verify_now(
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """Queue a full verification (as `medvault audit verify`) and go to its progress page.

    A large log takes tens of seconds, too long for a request: a job worker runs it
    (``audit.verify_job``). One at a time: while one is queued or running, asking again
    leads to that one; a finished one is run again.
    """
    require_whole_log(principal)
    job = _enqueue_verify(session, principal.actor_id)
    audit.record(
        session=session,
        context=context,
        action="audit.verify.requested",
        resource_type="AuditLog",
        details={"job_id": str(job.id), "via": "portal"},
    )
    audit.commit_or_refuse(session)
    return RedirectResponse(f"/audit/verify/{job.id}", status_code=303)


def _enqueue_verify(session: Session, requested_by: str) -> Job:
    payload = {"requested_by": requested_by}
    try:
        # A savepoint: two auditors asking at once race on the dedupe key's unique index
        # (PostgreSQL); the loser joins the winner's job instead of failing.
        with session.begin_nested():
            return queue.enqueue(
                session,
                kinds.AUDIT_VERIFY,
                payload,
                dedupe_key=VERIFY_DEDUPE_KEY,
                max_attempts=VERIFY_ATTEMPTS,
            )
    except IntegrityError:
        return session.scalars(select(Job).where(Job.dedupe_key == VERIFY_DEDUPE_KEY)).one()


@router.get("/verify/{job_id}")
def verify_page(
    job_id: str,
    request: Request,
    session: ClinicalSession,
    principal: PortalPrincipal,
    # "off": the visitor stopped the automatic refresh (WCAG 2.2.1, timing adjustable).
    refresh: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    """A verification's progress (refreshing itself every 2 s, no script) or its result."""
    require_whole_log(principal)
    job = session.get(Job, parse_id(job_id))
    # Only verification jobs: other jobs' rows name documents and versions.
    if job is None or job.kind != kinds.AUDIT_VERIFY:
        raise NotFound(N_("No audit log verification with this id."))
    view = verify_view(job)
    session.rollback()
    return render(
        request,
        "audit/verify.html",
        {
            "nav": "audit",
            "page_title": _("Audit log verification"),
            "job": view,
            "refresh_seconds": REFRESH_SECONDS if view.active and refresh != "off" else None,
        },
    )
