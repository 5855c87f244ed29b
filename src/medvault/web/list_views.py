"""Post, redirect, get for the portal's lists: filters behind an opaque view id.

A list's filter form is posted (its words are patient data and must not sit in a
URL); the answer is a 303 to ``/<list>?view=<id>``, where the id names the filters
kept server-side for this session (``auth.session_views``). Back, reload and the
links back to a list then replay a GET, never a form resubmission, and the browser's
history holds only ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse

from medvault.auth import session_views
from medvault.auth.web_sessions import ActiveWebSession
from medvault.kit.i18n import N_, gettext
from medvault.runtime import Runtime

T = TypeVar("T")

EXPIRED_NOTICE = N_("That list has expired, so it starts again from the beginning.")


def expired_notice() -> str:
    """:data:`EXPIRED_NOTICE` in the reader's language, for the page to show."""
    return gettext(EXPIRED_NOTICE)


# Where the keyboard focus goes on the page a posted list action leads to: the sort
# button just pressed, or the results (after Apply or a page change). Without it the
# reloaded page starts at the top and a keyboard user must tab back. Names, never data.
FOCUS_TARGETS = frozenset({"sort", "results"})


def focus_target(raw: str | None) -> str | None:
    return raw if raw in FOCUS_TARGETS else None


def remember(
    *,
    runtime: Runtime,
    auth_session: Session,
    active: ActiveWebSession,
    page: str,
    state: dict[str, Any],
    focus: str | None = None,
) -> RedirectResponse:
    """Keep ``state`` and send the browser to the GET that shows it (303: a GET follows).

    ``focus`` (one of :data:`FOCUS_TARGETS`) travels along for the page to put the
    keyboard focus back where the action was.
    """
    view_id = session_views.save(
        auth_session,
        secret_key=runtime.secret_key,
        session_id=active.session_id,
        page=page,
        state=state,
        max_session_seconds=runtime.settings.web_session_max_seconds,
    )
    auth_session.commit()
    target = focus_target(focus)
    suffix = f"&focus={target}" if target else ""
    return RedirectResponse(f"/{page}?view={view_id}{suffix}", status_code=303)


def recall(
    *,
    runtime: Runtime,
    auth_session: Session,
    active: ActiveWebSession,
    page: str,
    view_id: str,
    parse: Callable[[dict[str, Any]], T | None],
) -> T | None:
    """The state behind ``view_id`` for this session and page, as ``parse`` reads it.

    None when it is not (or no longer) there, or ``parse`` cannot read it (kept by an
    older release): the page then shows a fresh list with :data:`EXPIRED_NOTICE`.
    """
    state = session_views.load(
        auth_session,
        secret_key=runtime.secret_key,
        session_id=active.session_id,
        page=page,
        view_id=view_id,
    )
    return parse(state) if state is not None else None
