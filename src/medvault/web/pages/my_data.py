"""A patient's "Your data" page: ask for everything the vault holds, and download it once.

The archive is built in the background (``governance.exports``); this page lists the
patient's requests with where each stands, and hands a ready one over through its
one-time link (a POST that redirects, so the link never sits in the page).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from medvault.access.audit_reach import own_patient
from medvault.access.denials import Denial, denied
from medvault.audit import service as audit
from medvault.deps import ClinicalSession, RuntimeDep
from medvault.governance import exports
from medvault.governance.exports import MIN_PASSPHRASE, ExportRequest
from medvault.kit.i18n import N_
from medvault.kit.i18n import gettext as _
from medvault.kit.ids import parse_id
from medvault.kit.problems import Conflict, Forbidden
from medvault.web.session import CsrfChecked, PortalAuditCtx, PortalPrincipal, form_data
from medvault.web.templating import render

router = APIRouter(prefix="/my-data", include_in_schema=False)


def _own_patient(principal: PortalPrincipal) -> uuid.UUID:
    patient_id = own_patient(principal)
    if patient_id is None:
        problem = Forbidden(N_("This page is for a patient's own record."))
        raise denied(problem, Denial(principal, permission="documents:content"))
    return patient_id


def _page(
    request: Request,
    session: ClinicalSession,
    principal: PortalPrincipal,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    patient_id = own_patient(principal)
    assert patient_id is not None
    listed = exports.list_mine(session, principal, patient_id)
    session.rollback()
    return render(
        request,
        "my_data.html",
        {
            "nav": "my-data",
            "page_title": _("Your data"),
            "exports": listed,
            "min_passphrase": MIN_PASSPHRASE,
            "error": error,
            "requested": request.query_params.get("requested") == "1",
        },
        status_code=status_code,
    )


@router.get("")
def my_data_page(
    request: Request, session: ClinicalSession, principal: PortalPrincipal
) -> Response:
    """The patient's exports, and the form to ask for a new one."""
    _own_patient(principal)
    return _page(request, session, principal)


@router.post("/exports")
async def request_export(
    request: Request,
    session: ClinicalSession,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    patient_id = _own_patient(principal)
    form = await form_data(request)
    passphrase, again = form.get("passphrase", ""), form.get("passphrase_again", "")
    if passphrase != again:
        return _page(
            request, session, principal, error=_("The two passphrases differ."), status_code=422
        )
    try:
        body = ExportRequest(passphrase=passphrase)
    except ValidationError:
        error = _("Choose a passphrase of at least %(n)s characters.", n=MIN_PASSPHRASE)
        return _page(request, session, principal, error=error, status_code=422)
    exports.request(session, runtime, principal, context, patient_id, body)
    audit.commit_or_refuse(session)
    return RedirectResponse("/my-data?requested=1", status_code=303)


@router.post("/exports/{export_id}/download")
def download_export(
    export_id: str,
    request: Request,
    session: ClinicalSession,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """To the export's one-time link (never shown in the page, so never left in it)."""
    _own_patient(principal)
    found = exports.status(
        session,
        runtime,
        principal,
        context,
        parse_id(export_id),
        base_url=runtime.settings.public_url or str(request.base_url),
    )
    audit.commit_or_refuse(session)
    if found.download_url is None:
        raise Conflict(N_("This export is not ready, or was downloaded already."))
    return RedirectResponse(found.download_url, status_code=303)
