"""What a tus client really sent, seen from the server: an ASGI middleware for tests.

It records every request under /api/v1/uploads (method, Upload-Offset, Upload-Checksum,
the bytes that reached the app and their SHA-256, the status), and can hold the n-th
PATCH before the app sees it, so a test can interrupt a client at a known point.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOADS = "/api/v1/uploads"


@dataclass
class Exchange:
    method: str
    path: str
    offset: int | None
    checksum: str | None
    received: int = 0
    status: int | None = None
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def checksum_matches(self) -> bool:
        """Whether Upload-Checksum is the SHA-256 of the bytes that arrived."""
        expected = f"sha256 {base64.b64encode(self.digest.digest()).decode()}"
        return self.checksum == expected


@dataclass
class WireLog:
    exchanges: list[Exchange] = field(default_factory=list)
    hold_patch: int | None = None
    """Hold the PATCH with this 1-based number until ``release`` is set."""
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def patches(self, since: int = 0) -> list[Exchange]:
        return [e for e in self.exchanges[since:] if e.method == "PATCH"]

    def methods(self, since: int = 0) -> list[str]:
        return [e.method for e in self.exchanges[since:]]


class TusWire:
    def __init__(self, app: ASGIApp, log: WireLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(UPLOADS):
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        offset = headers.get("upload-offset")
        exchange = Exchange(
            scope["method"],
            scope["path"],
            int(offset) if offset is not None and offset.isdigit() else None,
            headers.get("upload-checksum"),
        )
        self.log.exchanges.append(exchange)
        if exchange.method == "PATCH" and len(self.log.patches()) == self.log.hold_patch:
            self.log.held.set()
            await asyncio.to_thread(self.log.release.wait, 60)

        async def counting() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                exchange.received += len(body)
                exchange.digest.update(body)
            return message

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
            await send(message)

        try:
            await self.app(scope, counting, noting)
        finally:
            exchange.done.set()
