"""The portal's session cookie, CSRF protection and per-request dependencies.

The cookie is HttpOnly (no script can read it), SameSite=Strict (no other site can
make the browser send it) and Secure with the ``__Host-`` prefix whenever the portal
is served over HTTPS. Every state-changing request must also carry the session's
CSRF token, as a form field or an ``X-CSRF-Token`` header: SameSite alone is not
enough on older browsers or for a sibling subdomain.
"""

from __future__ import annotations

import secrets
from datetime import UTC, tzinfo
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.responses import Response

from medvault.audit.context import AuditContext
from medvault.auth import web_sessions
from medvault.auth.principal import Principal, Role
from medvault.auth.web_sessions import ActiveWebSession
from medvault.deps import RuntimeDep, client_ip
from medvault.kit.i18n import N_
from medvault.kit.problems import Forbidden, Unauthorized
from medvault.kit.text import require_clean_text
from medvault.kit.time_zones import known_zone
from medvault.runtime import Runtime

PLAIN_COOKIE = "medvault_session"
SECURE_COOKIE = "__Host-medvault_session"
LOGIN_CSRF_COOKIE = "medvault_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Unauthorized):
    slug, title = "login-required", N_("Please log in")


class CsrfRefused(Forbidden):
    slug, title = "csrf-refused", N_("The form expired or did not come from this site")


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def session_cookie_name(request: Request) -> str:
    return SECURE_COOKIE if is_https(request) else PLAIN_COOKIE


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    # No Max-Age: the cookie dies with the browser, and the server ends it when idle.
    response.set_cookie(
        session_cookie_name(request),
        token,
        httponly=True,
        secure=is_https(request),
        samesite="strict",
        path="/",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        session_cookie_name(request),
        path="/",
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )


def login_csrf_token(request: Request) -> str:
    """A double-submit token for the login form, before there is a session to bind to."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)


def set_login_csrf_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        secure=is_https(request),
        samesite="strict",
        path="/login",
        max_age=3600,
    )


def login_csrf_matches(request: Request, presented: str | None) -> bool:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(expected and presented) and secrets.compare_digest(str(expected), str(presented))


def _resolve(runtime: Runtime, token: str) -> ActiveWebSession | None:
    # Reused from the principal cache while nothing was revoked (auth.principal_cache),
    # else looked up read-only: on SQLite a write session would take the auth database's
    # only write lock on every page view, not just every TOUCH_INTERVAL.
    active = web_sessions.resolve_cached(
        cache=runtime.principals.web,
        read_session=runtime.auth.read_session,
        settings=runtime.settings,
        token=token,
    )
    if active is not None and active.needs_touch:
        with runtime.auth.session() as session:
            live = web_sessions.touch(
                session=session, settings=runtime.settings, session_id=active.session_id
            )
            session.commit()
        if not live:
            return None
    return active


def _portal_context(request: Request, runtime: Runtime, active: ActiveWebSession) -> None:
    """What every page's layout needs: who is logged in, the CSRF token, the banner."""
    principal = active.principal
    request.state.portal_context = {
        "me": principal,
        "role": principal.role.value,
        "csrf_token": web_sessions.csrf_token(
            secret_key=runtime.secret_key, token_hash=active.token_hash
        ),
        "break_glass": principal.break_glass_reason,
        "break_glass_until": active.break_glass_until,
        "portal_name": runtime.settings.portal_name,
        # Every time on the page is shown in this zone (templating's ``when``).
        "zone": known_zone(active.time_zone) or known_zone(runtime.settings.portal_time_zone),
        "break_glass_minutes": runtime.settings.web_break_glass_seconds // 60,
        "can_self_upload": runtime.settings.patient_self_upload,
        # How long the page may stay idle for sure: the server counts idleness from its
        # last recorded activity, which a page view moves only every TOUCH_INTERVAL.
        "idle_seconds": runtime.settings.web_session_idle_seconds
        - int(web_sessions.TOUCH_INTERVAL.total_seconds()),
    }


def viewer_zone(request: Request) -> tzinfo:
    """The zone this request's page shows times in, and reads typed dates in."""
    zone = getattr(request.state, "portal_context", {}).get("zone")
    return zone if isinstance(zone, tzinfo) else UTC


def optional_session(request: Request, runtime: RuntimeDep) -> ActiveWebSession | None:
    token = request.cookies.get(session_cookie_name(request))
    if not token:
        return None
    active = _resolve(runtime, token)
    if active is not None:
        _portal_context(request, runtime, active)
    return active


def require_session(
    request: Request,
    active: Annotated[ActiveWebSession | None, Depends(optional_session)],
) -> ActiveWebSession:
    if active is None:
        raise LoginRequired(N_("Your session has ended. Please log in again."))
    return active


PortalSession = Annotated[ActiveWebSession, Depends(require_session)]
OptionalPortalSession = Annotated[ActiveWebSession | None, Depends(optional_session)]


def current_principal(active: PortalSession) -> Principal:
    return active.principal


PortalPrincipal = Annotated[Principal, Depends(current_principal)]


async def verify_csrf(request: Request, active: PortalSession, runtime: RuntimeDep) -> None:
    """Refuse a state-changing request that lacks this session's CSRF token.

    Uploads send the token as a header, so their multipart body is never parsed here
    (it streams straight into the upload pipeline).
    """
    presented = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if presented is None and content_type.startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not web_sessions.csrf_matches(
        secret_key=runtime.secret_key, token_hash=active.token_hash, presented=presented
    ):
        raise CsrfRefused(N_("Reload the page and try again."))


CsrfChecked = Annotated[None, Depends(verify_csrf)]


def portal_audit_context(request: Request, principal: PortalPrincipal) -> AuditContext:
    return AuditContext.for_principal(
        principal,
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
    )


PortalAuditCtx = Annotated[AuditContext, Depends(portal_audit_context)]


def require_staff(principal: Principal) -> None:
    """Patient-picker pages are for practice staff: a patient has only their own record."""
    if principal.role is Role.PATIENT:
        raise Forbidden(N_("This page is for practice staff."))


def home_for(principal: Principal) -> str:
    """Where a user lands after logging in."""
    return "/audit" if principal.role is Role.AUDITOR else "/documents"


async def form_data(request: Request) -> dict[str, Any]:
    """The urlencoded form as a plain dict (the last value wins for repeated fields)."""
    form = await request.form()
    posted = [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
    # Every portal form passes here: the vault's one rule on control characters.
    require_clean_text([item for pair in posted for item in (("field name", pair[0]), pair)])
    return {key: value for key, value in form.items() if isinstance(value, str)}
