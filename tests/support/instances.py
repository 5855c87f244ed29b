"""Shared by the principal-cache tests: two instances on one database, and SQL counting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from medvault.auth.principal import Role
from medvault.auth.service import create_api_token
from medvault.runtime import Runtime
from tests.support.portal import portal_login
from tests.support.users import MadeUser, UserFactory, bearer, login

ME = "/api/v1/auth/me"
SESSION_COOKIE = "medvault_session"


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement ``engine`` sends while the block runs."""
    seen: list[str] = []

    def record(*args: Any) -> None:  # (conn, cursor, statement, parameters, context, many)
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@dataclass
class Instance:
    """One vault instance: its runtime and an HTTP client on its app."""

    runtime: Runtime
    client: TestClient
    admin_token: str  # an API token with every permission, for admin calls

    def get_me(self, token: str) -> httpx.Response:
        response: httpx.Response = self.client.get(ME, headers=bearer(token))
        return response

    def portal_page(self, cookie: str) -> httpx.Response:
        self.client.cookies.set(SESSION_COOKIE, cookie)
        try:
            response: httpx.Response = self.client.get("/documents", follow_redirects=False)
        finally:
            self.client.cookies.clear()
        return response


@dataclass
class Credentials:
    """A clinician's three ways in: a JWT pair, an API token of theirs, a portal cookie."""

    user: MadeUser
    access: str
    refresh: str
    api_token: str
    cookie: str


def credentials_for(instance: Instance, make_user: UserFactory) -> Credentials:
    user = make_user(Role.CLINICIAN)
    pair = login(instance.client, user.username, user.password).json()
    with instance.runtime.auth.session() as session:
        issued = create_api_token(
            session=session, name="owned", role=Role.CLINICIAN, user_id=user.id
        )
        session.commit()
    instance.client.cookies.clear()
    assert portal_login(instance.client, user.username, user.password).status_code == 303
    cookie = instance.client.cookies.get(SESSION_COOKIE)
    instance.client.cookies.clear()
    assert cookie
    return Credentials(user, pair["access_token"], pair["refresh_token"], issued.token, cookie)


def is_credential_lookup(statement: str) -> bool:
    lowered = statement.lower()
    return any(
        f"from {table}" in lowered or f"join {table}" in lowered
        for table in ("api_tokens", "users", "refresh_tokens", "web_sessions")
    )
