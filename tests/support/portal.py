"""Driving the portal over HTTP (no browser): log in through the form, post with CSRF."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi.testclient import TestClient

from medvault.web.session import LOGIN_CSRF_COOKIE

_CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]{64})">')


def portal_login(
    client: TestClient, username: str, password: str, *, time_zone: str = ""
) -> httpx.Response:
    """Log in as a browser would: GET the form (login CSRF cookie), then POST it.

    ``time_zone`` is what the form's script would have read from the browser ("" is a
    browser without script).
    """
    client.get("/login")
    token = client.cookies.get(LOGIN_CSRF_COOKIE)
    form = {"username": username, "password": password, "csrf_token": token or ""}
    response: httpx.Response = client.post(
        "/login", data={**form, "time_zone": time_zone}, follow_redirects=False
    )
    return response


def csrf_token(client: TestClient, page: str = "/documents") -> str:
    """The session's CSRF token, as every portal page carries it."""
    html = client.get(page).text
    match = _CSRF_META.search(html)
    assert match, f"no CSRF token on {page}"
    return match.group(1)


def post_form(client: TestClient, url: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    """POST a portal form with the session's CSRF token; ``kwargs`` go to ``client.post``."""
    token = csrf_token(client)
    response: httpx.Response = client.post(url, data={**data, "csrf_token": token}, **kwargs)
    return response
