"""Caps on request heads and non-upload bodies, enforced before the app buffers them.

Upload routes stream their body through their own guard (``MAX_UPLOAD_BYTES``, and
FHIR's base64 reader); every other body is JSON or a form the app reads whole, so it
is cut here at ``MAX_JSON_BODY_BYTES``: up front when ``Content-Length`` says too
much, and while streaming when the client sends chunks (or lies about the length).
Memory then stays flat whatever an anonymous client sends to ``/auth/refresh``.

The header check is exact. The server's own guard (``ops.server``) only bounds an
*incomplete* head: a 100 KB head that arrives in one read passes it and reaches here.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medvault.kit.problems import PROBLEM_MEDIA_TYPE, HeadersTooLarge, PayloadTooLarge, Problem

# (method, path) of routes that carry documents and enforce their own upload limit.
_UPLOAD_ROUTES = tuple(
    (method, re.compile(pattern))
    for method, pattern in (
        ("POST", r"^/api/v1/documents/?$"),
        ("POST", r"^/api/v1/documents/[^/]+/versions/?$"),
        ("POST", r"^/upload/files/?$"),
        ("POST", r"^/documents/[^/]+/versions/?$"),
        ("POST", r"^/fhir/?$"),  # transaction Bundles with base64 Binary data
        ("POST", r"^/fhir/Binary/?$"),
        ("POST", r"^/fhir/DocumentReference/?$"),  # may inline the attachment's data
        ("POST", r"^/api/v1/uploads/?$"),  # tus creation-with-upload
        ("PATCH", r"^/api/v1/uploads/[^/]+/?$"),  # tus PATCH
        ("POST", r"^/upload/resumable/?$"),  # the portal's tus creation-with-upload
        ("PATCH", r"^/upload/resumable/[^/]+/?$"),  # the portal's tus PATCH
    )
)


def is_upload_route(method: str, path: str) -> bool:
    return any(method == m and pattern.match(path) for m, pattern in _UPLOAD_ROUTES)


class BodyTooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so FastAPI's body parsing re-raises it
    (anything else becomes a 400) and the problem handlers answer 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            detail=f"Request bodies on this route are at most {limit} bytes.",
        )


def _problem(problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.to_dict(),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={"Connection": "close"},
    )


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + sum(
            len(name) + len(value) + 4 for name, value in scope["headers"]
        )
        if head > self.max_header_bytes:
            too_big = HeadersTooLarge(
                f"Request heads are at most {self.max_header_bytes} bytes.",
                max_bytes=self.max_header_bytes,
            )
            await _problem(too_big)(scope, receive, send)
            return
        if is_upload_route(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        try:
            declared = int(Headers(scope=scope).get("content-length", "0"))
        except ValueError:
            declared = 0  # llhttp refuses malformed lengths before we get here
        if declared > limit:
            refused = PayloadTooLarge(
                f"Request bodies on this route are at most {limit} bytes.", max_bytes=limit
            )
            await _problem(refused)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)
