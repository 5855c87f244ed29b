"""How ``medvault serve`` runs uvicorn: its limits, its proxy trust, its HTTP parser.

**The parser.** uvicorn's httptools protocol (llhttp, in C), not its h11 one: h11 is
pure Python and copies every body byte twice through its receive buffer. On a 1 GiB
raw upload that was the largest single difference from the baseline
(``bench/large_files.py``, which runs uvicorn's default, httptools).

httptools has neither of the two guards the vault needs on a request *head*, so
``GuardedHttpProtocol`` adds both around uvicorn's protocol:

- **A head timeout.** uvicorn has a keep-alive timeout and no timeout for a head that
  never completes, so 60 slowloris sockets could stay open indefinitely. A connection
  gets ``MEDVAULT_SERVER_HEADER_TIMEOUT_SECONDS`` to deliver a complete head, counted
  once from its first byte (or from the connection for a new one), not reset by each
  dribbled byte. A slow *body* is not timed here; the reverse proxy
  (deploy/nginx/medvault.conf, ``client_body_timeout``) covers that.
- **A bound on an incomplete head.** llhttp hands a header to Python only once it is
  whole, and httptools buffers the pieces until then, so a never-ending header line
  would grow without limit. Once more than ``MEDVAULT_MAX_HEADER_BYTES`` have arrived
  without the head completing, the connection gets ``431 headers-too-large`` and is
  closed. A complete head is measured exactly by ``ops.request_limits`` in the app.

``X-Forwarded-For`` is believed only from ``MEDVAULT_TRUSTED_PROXIES``. uvicorn's own
default trusts 127.0.0.1, which would let any local process choose the address the
per-address login limit counts; with the list empty the proxy-header middleware is
not installed at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from medvault.config import Settings
from medvault.kit.problems import PROBLEM_MEDIA_TYPE, HeadersTooLarge

logger = logging.getLogger(__name__)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head timeout and a bound on an incomplete head."""

    head_timeout_seconds: float = 10.0
    max_head_bytes: int = 16 * 1024

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        # Between requests and inside a head, until llhttp reports the head complete.
        self._in_head = True
        self._head_received = 0
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn narrows it
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # Counted before parsing: when the head completes inside this read, the
            # count is reset by on_headers_complete and the body bytes are not kept.
            self._head_received += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            self._cancel_head_timer()
        elif self._in_head and self._head_received > self.max_head_bytes:
            self._refuse_head()

    def on_message_begin(self) -> None:
        self._in_head = True
        super().on_message_begin()
        # The first byte of a head: the clock runs (once).
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_received = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next bytes on this connection start the next head.
        self._in_head = True
        self._head_received = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_seconds, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            logger.debug("closing a connection whose request head took too long")
            self.transport.close()

    def _refuse_head(self) -> None:
        self._cancel_head_timer()
        problem = HeadersTooLarge(
            f"Request heads are at most {self.max_head_bytes} bytes.",
            max_bytes=self.max_head_bytes,
        )
        body = json.dumps(problem.to_dict()).encode()
        head = (
            f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode("ascii")
        self.transport.write(STATUS_LINE[problem.status] + head + body)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpProtocol]:
    """The protocol class with these limits (uvicorn instantiates it per connection)."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "head_timeout_seconds": settings.server_header_timeout_seconds,
            "max_head_bytes": settings.max_header_bytes,
        },
    )


def configure_guarded_protocol(settings: Settings) -> None:
    """Set the limits on the class itself, in a process that names the protocol by
    import path (a child of ``medvault serve --workers N``)."""
    GuardedHttpProtocol.head_timeout_seconds = settings.server_header_timeout_seconds
    GuardedHttpProtocol.max_head_bytes = settings.max_header_bytes


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` that apply the vault's server limits."""
    trusted = list(settings.trusted_proxies)
    return {
        "http": guarded_protocol(settings),
        "timeout_keep_alive": settings.server_keep_alive_seconds,
        "limit_concurrency": settings.server_limit_concurrency,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or None,
        "server_header": False,  # no need to tell scanners which server this is
    }
