"""Read-after fences: a caller's own writes are never read back from a stale replica.

After a request that may have written (any method but GET, HEAD and OPTIONS, and not
a FHIR ``_search``) succeeds, its response carries the primary's WAL position, which
covers everything the request committed, in a ``MedVault-Read-After`` header and a
cookie of the same meaning. A later request that brings it back (the cookie comes by
itself from browsers and cookie-keeping clients; API clients may send the header) is
served from the replica only once the replica has replayed that far
(``db.replica``). Any instance can check a fence, so this holds across N stateless
instances behind a load balancer, with no shared state.

A fence is a WAL position: it says how much the vault has written, nothing about what.
"""

from __future__ import annotations

import logging

from anyio import to_thread
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medvault.db.replica import ClinicalReplica, format_lsn, parse_lsn

logger = logging.getLogger(__name__)

HEADER = "MedVault-Read-After"
COOKIE = "medvault_read_after"
# Longer than any lag the replica is read at (MEDVAULT_REPLICA_MAX_LAG_SECONDS), so the
# fence outlives the window in which it matters.
COOKIE_SECONDS = 3600
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def request_fence(connection: HTTPConnection) -> int | None:
    """The newest fence the request brought (header or cookie); a malformed one is ignored."""
    fences = [
        parse_lsn(connection.headers.get(HEADER)),
        parse_lsn(connection.cookies.get(COOKIE)),
    ]
    known = [fence for fence in fences if fence is not None]
    return max(known) if known else None


def _may_write(scope: Scope) -> bool:
    return scope["method"] not in _READS and not scope["path"].endswith("/_search")


class ReadFenceMiddleware:
    """Adds the fence to every successful response of a request that may have written."""

    def __init__(self, app: ASGIApp, *, replica: ClinicalReplica) -> None:
        self.app = app
        self.replica = replica

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _may_write(scope):
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def with_fence(message: Message) -> None:
            # Routes commit before they respond, so at the response's start the
            # request's writes are in the WAL below the primary's current position.
            if message["type"] == "http.response.start" and message["status"] < 400:
                try:
                    position = await to_thread.run_sync(self.replica.primary_position)
                except SQLAlchemyError as exc:
                    logger.warning("no read-after fence: %s", type(exc).__name__)
                    position = None
                if position is not None:
                    fence = format_lsn(position)
                    headers = MutableHeaders(scope=message)
                    headers[HEADER] = fence
                    cookie = (
                        f"{COOKIE}={fence}; Path=/; Max-Age={COOKIE_SECONDS}; "
                        "HttpOnly; SameSite=Lax"
                    )
                    headers.append("Set-Cookie", cookie + ("; Secure" if https else ""))
            await send(message)

        await self.app(scope, receive, with_fence)
