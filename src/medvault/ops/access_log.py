"""One log line per request, with nothing in it that identifies a patient.

Query strings are never logged (they can carry identifiers such as an NHS number);
paths hold only opaque ids. The request id ties a line to its audit events.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("medvault.access")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            path = scope["path"]
            if path.startswith("/api/v1/download/"):
                path = "/api/v1/download/<signed>"  # the path itself is a credential
            logger.info(
                "%s %s %s %.1fms request_id=%s",
                scope["method"],
                path,
                status,
                (time.perf_counter() - started) * 1000,
                scope.get("state", {}).get("request_id", "-"),
            )
