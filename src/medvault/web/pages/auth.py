"""Logging in and out of the portal."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from medvault.auth import web_sessions
from medvault.auth.password_slots import LoginBusy
from medvault.auth.ratelimit import TooManyRequests
from medvault.auth.service import commit_with_audit
from medvault.deps import (
    AnonymousAuditCtx,
    AuthReadSession,
    AuthSession,
    ClinicalSession,
    RateLimitsDep,
    RuntimeDep,
)
from medvault.kit.i18n import N_, translate
from medvault.kit.i18n import gettext as _
from medvault.web.language import LANGUAGE_COOKIE, set_language_cookie
from medvault.web.session import (
    CsrfChecked,
    LoginRequired,
    OptionalPortalSession,
    PortalAuditCtx,
    PortalSession,
    clear_session_cookie,
    form_data,
    home_for,
    login_csrf_matches,
    login_csrf_token,
    session_cookie_name,
    set_login_csrf_cookie,
    set_session_cookie,
)
from medvault.web.templating import render

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str | None:
    """Only a path on this site: never ``//evil.example`` or a full URL (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


def _login_page(
    request: Request,
    *,
    error: str | None = None,
    status_code: int = 200,
    username: str = "",
    next_path: str | None = None,
) -> Response:
    token = login_csrf_token(request)
    response = render(
        request,
        "login.html",
        {"error": error, "username": username, "next": next_path or "", "login_csrf": token},
        status_code=status_code,
    )
    set_login_csrf_cookie(request, response, token)
    return response


@router.get("/")
def home(active: OptionalPortalSession) -> Response:
    if active is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(home_for(active.principal), status_code=303)


@router.get("/login")
def login_form(
    request: Request, active: OptionalPortalSession, next: str | None = None
) -> Response:
    if active is not None:
        return RedirectResponse(home_for(active.principal), status_code=303)
    return _login_page(request, next_path=safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    runtime: RuntimeDep,
    reader: AuthReadSession,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    limits: RateLimitsDep,
    context: AnonymousAuditCtx,
) -> Response:
    form = await form_data(request)
    username = form.get("username", "")[:200]
    password = form.get("password", "")
    next_path = safe_next(form.get("next"))
    if not login_csrf_matches(request, form.get("csrf_token")):
        return _login_page(
            request,
            error=_("The login form expired. Please try again."),
            status_code=403,
            username=username,
            next_path=next_path,
        )
    if not username or not password:
        return _login_page(
            request,
            error=_("Enter your username and password."),
            status_code=422,
            username=username,
            next_path=next_path,
        )
    try:
        # Counted before the password is checked (see auth.ratelimit), like the API.
        limits.hit_login(username=username, client_ip=context.client_ip)
        started = web_sessions.start(
            reader=reader,
            auth_session=auth_session,
            clinical_session=clinical_session,
            settings=runtime.settings,
            username=username,
            password=password,
            context=context,
            password_slots=limits.password_slots,
            browser_time_zone=form.get("time_zone", "")[:100],
            browser_language=request.cookies.get(LANGUAGE_COOKIE),
        )
    except (TooManyRequests, LoginBusy) as exc:
        response = _login_page(
            request,
            error=translate(exc.detail or exc.title),
            status_code=exc.status,
            username=username,
            next_path=next_path,
        )
        response.headers.update(exc.headers)
        return response
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    if started is None:
        return _login_page(
            request,
            error=_("The username or password is wrong, or the account is disabled."),
            status_code=401,
            username=username,
            next_path=next_path,
        )
    limits.login_succeeded(username=username)
    response = RedirectResponse(next_path or "/", status_code=303)
    set_session_cookie(request, response, started.token)
    if started.language is not None:
        # A new browser speaks the language this user chose on another.
        set_language_cookie(request, response, started.language)
    return response


@router.post("/logout")
def logout(
    request: Request,
    active: PortalSession,
    _csrf: CsrfChecked,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    context: PortalAuditCtx,
) -> Response:
    web_sessions.end(
        auth_session=auth_session,
        clinical_session=clinical_session,
        token=request.cookies[session_cookie_name(request)],
        context=context,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(request, response)
    return response


@router.post("/session/keepalive", status_code=204)
def keepalive(
    runtime: RuntimeDep, active: PortalSession, _csrf: CsrfChecked, auth_session: AuthSession
) -> Response:
    """ "Stay logged in" in the session-expiry warning: restart the idle clock now.

    An ordinary page view restarts it only every ``TOUCH_INTERVAL``; this always does,
    so the warning's countdown can start again from the full idle limit.
    """
    live = web_sessions.touch(
        session=auth_session, settings=runtime.settings, session_id=active.session_id
    )
    auth_session.commit()
    if not live:
        raise LoginRequired(N_("Your session has ended. Please log in again."))
    return Response(status_code=204)
