"""Every revocation beats the principal cache, on the very next request, on every instance.

Two runtimes on one database stand for two instances (two ``serve`` processes, or two
hosts on one PostgreSQL): instance A has the caller's principal cached, and the
change arrives through A itself or through B. A last test revokes from a separate
process (the ``medvault`` CLI) while A holds the principal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.app import create_app
from medvault.audit.context import AuditContext
from medvault.auth import users, web_sessions
from medvault.auth.models import ApiToken, WebSession
from medvault.auth.service import commit_with_audit, revoke_api_token
from medvault.runtime import Runtime, build_runtime
from tests.support.backends import Backend
from tests.support.instances import (
    Credentials,
    Instance,
    credentials_for,
    is_credential_lookup,
    statements,
)
from tests.support.portal import post_form
from tests.support.users import UserFactory, bearer

SYSTEM = AuditContext.system("pytest")


@pytest.fixture
def instances(runtime: Runtime, backend: Backend, api_token: str) -> Iterator[dict[str, Instance]]:
    """A (the test's runtime) and B (a second runtime on the same databases)."""
    other = build_runtime(backend.settings)
    try:
        with (
            TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as a,
            TestClient(create_app(runtime=other), raise_server_exceptions=False) as b,
        ):
            yield {"A": Instance(runtime, a, api_token), "B": Instance(other, b, api_token)}
    finally:
        other.close()


@pytest.fixture
def creds(instances: dict[str, Instance], make_user: UserFactory) -> Credentials:
    return credentials_for(instances["A"], make_user)


def warm(a: Instance, creds: Credentials) -> None:
    """Each credential works on A, and its second use there is served from the cache."""
    for _ in range(2):
        assert a.get_me(creds.access).status_code == 200
        assert a.get_me(creds.api_token).status_code == 200
        assert a.portal_page(creds.cookie).status_code == 200
    with statements(a.runtime.auth.engine) as sent:
        assert a.get_me(creds.access).status_code == 200
        assert a.get_me(creds.api_token).status_code == 200
        assert a.portal_page(creds.cookie).status_code == 200
    assert not [s for s in sent if is_credential_lookup(s)], sent


def _revoke_owned_token(via: Instance, creds: Credentials) -> None:
    with via.runtime.auth.session() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.user_id == creds.user.id)).one()
        assert revoke_api_token(session=session, token_id=token.id)
        session.commit()


def _logout(via: Instance, creds: Credentials) -> None:
    out = via.client.post("/api/v1/auth/logout", headers=bearer(creds.access))
    assert out.status_code == 204


def _refresh_reuse(via: Instance, creds: Credentials) -> None:
    body = {"refresh_token": creds.refresh}
    assert via.client.post("/api/v1/auth/refresh", json=body).status_code == 200
    # The same refresh token again: taken for theft, the whole family is revoked.
    assert via.client.post("/api/v1/auth/refresh", json=body).status_code == 401


def _disable(via: Instance, creds: Credentials) -> None:
    out = via.client.post(f"/api/v1/users/{creds.user.id}/disable", headers=bearer(via.admin_token))
    assert out.status_code == 200, out.text


def _change_password(via: Instance, creds: Credentials) -> None:
    with via.runtime.auth.session() as auth, via.runtime.clinical.session() as clinical:
        users.change_password(
            auth_session=auth,
            clinical_session=clinical,
            user_id=creds.user.id,
            new_password="a-new-password-long-enough",
            context=SYSTEM,
        )
        commit_with_audit(auth_session=auth, clinical_session=clinical)


def _portal_logout(via: Instance, creds: Credentials) -> None:
    via.client.cookies.set("medvault_session", creds.cookie)
    try:
        out = post_form(via.client, "/logout", {}, follow_redirects=False)
    finally:
        via.client.cookies.clear()
    assert out.status_code == 303


# What each change must end at once (True) and what it must leave working (False).
PATHS: dict[str, tuple[Callable[[Instance, Credentials], None], dict[str, bool]]] = {
    "api-token-revoke": (_revoke_owned_token, {"jwt": False, "token": True, "portal": False}),
    "logout": (_logout, {"jwt": True, "token": False, "portal": False}),
    "refresh-token-reuse": (_refresh_reuse, {"jwt": True, "token": False, "portal": False}),
    "user-disable": (_disable, {"jwt": True, "token": True, "portal": True}),
    "password-change": (_change_password, {"jwt": True, "token": False, "portal": True}),
    "portal-logout": (_portal_logout, {"jwt": False, "token": False, "portal": True}),
}


@pytest.mark.parametrize("via", ["A", "B"])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_revocation_applies_to_the_very_next_request(
    instances: dict[str, Instance], creds: Credentials, path: str, via: str
) -> None:
    a = instances["A"]
    change, ends = PATHS[path]
    warm(a, creds)
    change(instances[via], creds)
    # The very next request on A: no waiting, no retry.
    assert (a.get_me(creds.access).status_code == 401) is ends["jwt"]
    assert (a.get_me(creds.api_token).status_code == 401) is ends["token"]
    assert (a.portal_page(creds.cookie).status_code == 303) is ends["portal"]


@pytest.mark.parametrize("via", ["A", "B"])
def test_break_glass_starts_and_ends_on_the_next_click(
    instances: dict[str, Instance], creds: Credentials, via: str
) -> None:
    a, other = instances["A"], instances[via]
    banner = "Emergency access is on"
    warm(a, creds)
    with other.runtime.auth.read_session() as session:
        session_id = session.scalars(select(WebSession.id)).one()

    def change(start: bool) -> None:
        with other.runtime.auth.session() as auth, other.runtime.clinical.session() as clinical:
            common: dict[str, Any] = {
                "auth_session": auth,
                "clinical_session": clinical,
                "session_id": session_id,
                "context": SYSTEM,
            }
            if start:
                web_sessions.declare_break_glass(
                    settings=other.runtime.settings, reason="cardiac arrest", **common
                )
            else:
                web_sessions.end_break_glass(**common)
            commit_with_audit(auth_session=auth, clinical_session=clinical)

    change(start=True)
    assert banner in a.portal_page(creds.cookie).text
    assert banner in a.portal_page(creds.cookie).text  # now from the cache
    change(start=False)
    assert banner not in a.portal_page(creds.cookie).text


def _cli_env(backend: Backend) -> dict[str, str]:
    """The backend's settings as the environment a ``medvault`` command reads."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEDVAULT_")}
    for name, value in backend.settings.model_dump(exclude_unset=True).items():
        env[f"MEDVAULT_{name.upper()}"] = str(value)
    return env


def test_a_revocation_from_another_process_applies_at_once(
    instances: dict[str, Instance], creds: Credentials, backend: Backend, tmp_path: Path
) -> None:
    a = instances["A"]
    warm(a, creds)
    with a.runtime.auth.read_session() as session:
        token_id = session.scalars(
            select(ApiToken.id).where(ApiToken.user_id == creds.user.id)
        ).one()
    env = _cli_env(backend)
    for argv in (["token", "revoke", str(token_id)], ["user", "disable", creds.user.username]):
        done = subprocess.run(
            [sys.executable, "-m", "medvault.cli", *argv],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        if argv[0] == "token":  # the token is gone; the user's login still works
            assert a.get_me(creds.api_token).status_code == 401
            assert a.get_me(creds.access).status_code == 200
    assert a.get_me(creds.access).status_code == 401
    assert a.portal_page(creds.cookie).status_code == 303
