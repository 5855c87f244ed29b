"""One log line per request, with nothing in it that identifies a patient.

Query strings are never logged (they can carry identifiers such as an NHS number);
paths hold only opaque ids. The request id ties a line to its audit events.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medvault.kit.redaction import loggable_path

logger = logging.getLogger("medvault.access")
# Load balancers and orchestrators poll these every few seconds: a healthy answer at INFO
# would bury the requests people make. A failing probe is still logged at INFO.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


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
            quiet = scope["path"] in PROBE_PATHS and status < 400
            logger.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %s %.1fms request_id=%s",
                scope["method"],
                loggable_path(scope["path"]),
                status,
                (time.perf_counter() - started) * 1000,
                scope.get("state", {}).get("request_id", "-"),
            )
