"""The language chooser in every page's footer.

A visitor's choice is remembered by the browser (a cookie, for a year); a signed-in
user's also by their account, so every device they log in on speaks it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from medvault.auth import web_sessions
from medvault.deps import AuthSession, RuntimeDep
from medvault.kit import i18n
from medvault.kit.i18n import N_
from medvault.kit.problems import ValidationFailed
from medvault.web.language import set_language_cookie
from medvault.web.pages.auth import safe_next
from medvault.web.session import (
    CsrfRefused,
    OptionalPortalSession,
    form_data,
    login_csrf_matches,
)

router = APIRouter(include_in_schema=False)


# Under /login so that a visitor's login-form CSRF cookie (path /login) comes along.
@router.post("/login/language")
async def choose_language(
    request: Request,
    runtime: RuntimeDep,
    active: OptionalPortalSession,
    auth_session: AuthSession,
) -> Response:
    form = await form_data(request)
    presented = form.get("csrf_token")
    if active is not None:
        trusted = web_sessions.csrf_matches(
            secret_key=runtime.secret_key, token_hash=active.token_hash, presented=presented
        )
    else:
        trusted = login_csrf_matches(request, presented)
    if not trusted:
        raise CsrfRefused(N_("Reload the page and try again."))
    code = i18n.supported(form.get("language"))
    if code is None:
        raise ValidationFailed(N_("Choose one of the languages offered."))
    if active is not None:
        web_sessions.set_language(
            session=auth_session, user_id=active.principal.subject_id, language=code
        )
        auth_session.commit()
    response = RedirectResponse(safe_next(form.get("next")) or "/", status_code=303)
    set_language_cookie(request, response, code)
    return response
