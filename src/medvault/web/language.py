"""Which language each portal request is answered in: the visitor's choice, else their browser's.

A visitor picks a language in the footer (``pages/language.py``), which sets a cookie;
without one, the browser's ``Accept-Language`` decides among the languages the portal
has; failing that, ``MEDVAULT_PORTAL_LANGUAGE``. The cookie holds only a language code.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from medvault.kit import i18n
from medvault.web.session import is_https

LANGUAGE_COOKIE = "medvault_language"
# The API and FHIR answer in English whatever the caller's language: their clients
# branch on codes and types, and a log of their answers reads the same everywhere.
_ENGLISH_PREFIXES = ("/api/", "/fhir")
_YEAR = 365 * 24 * 3600
# A header longer than this is not a browser's: read its start and ignore the rest.
_MAX_ACCEPT_LANGUAGE = 500


def set_language_cookie(request: Request, response: Response, code: str) -> None:
    # Only the server reads it; Lax, so a link from elsewhere into the portal still
    # opens in the visitor's language.
    response.set_cookie(
        LANGUAGE_COOKIE,
        code,
        max_age=_YEAR,
        secure=is_https(request),
        httponly=True,
        samesite="lax",
        path="/",
    )


def _weighted(header: str) -> list[tuple[float, int, str]]:
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header[:_MAX_ACCEPT_LANGUAGE].split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if tag and weight > 0:
            # Highest weight first; among equals, the browser's own order.
            ranked.append((-weight, position, tag.lower()))
    return sorted(ranked)


def from_accept_language(header: str, available: Iterable[str]) -> str | None:
    """The first language in ``header`` the portal has: "cy-GB" and "cy" both mean Welsh."""
    codes = set(available)
    for _weight, _position, tag in _weighted(header):
        primary = tag.split("-")[0]
        if primary in codes:
            return primary
    return None


def choose(*, cookie: str | None, accept_language: str, default: str) -> str:
    return (
        i18n.supported(cookie)
        or from_accept_language(accept_language, i18n.LANGUAGES)
        or i18n.supported(default)
        or i18n.DEFAULT_LANGUAGE
    )


def _cookie(raw: str, name: str) -> str | None:
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class LanguageMiddleware:
    """Sets the request's language before any route runs (pure ASGI: same task, same context)."""

    def __init__(self, app: ASGIApp, *, default: str) -> None:
        self.app = app
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_ENGLISH_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        code = choose(
            cookie=_cookie(headers.get(b"cookie", b"").decode("latin-1"), LANGUAGE_COOKIE),
            accept_language=headers.get(b"accept-language", b"").decode("latin-1"),
            default=self.default,
        )
        with i18n.language(code):
            await self.app(scope, receive, send)
