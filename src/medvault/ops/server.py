"""How ``medvault serve`` runs uvicorn: its limits, its proxy trust, a head timeout.

uvicorn (with h11) offers a keep-alive timeout, a bound on an *incomplete* request
head, and a concurrency limit; it has no timeout for a request head that never
completes, so 60 slowloris sockets could stay open indefinitely. ``HeadTimeoutProtocol``
adds that: a connection gets ``MEDVAULT_SERVER_HEADER_TIMEOUT_SECONDS`` to deliver a
complete head, counted once from its first byte (or from the connection for a new
one), not reset by each dribbled byte. A slow *body* is not timed here; the reverse
proxy (deploy/nginx/medvault.conf, ``client_body_timeout``) covers that.

``X-Forwarded-For`` is believed only from ``MEDVAULT_TRUSTED_PROXIES``. uvicorn's own
default trusts 127.0.0.1, which would let any local process choose the address the
per-address login limit counts; with the list empty the proxy-header middleware is
not installed at all.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from medvault.config import Settings

logger = logging.getLogger(__name__)


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head is too slow."""

    head_timeout_seconds: float = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn narrows it
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._cancel_head_timer()
        elif self.conn.their_state is h11.IDLE:
            # Bytes of a head that is not complete yet: the clock runs (once).
            self._arm_head_timer()
        else:
            self._cancel_head_timer()

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
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            logger.debug("closing a connection whose request head took too long")
            self.transport.close()


def head_timeout_protocol(seconds: float) -> type[HeadTimeoutProtocol]:
    """The protocol class with this timeout (uvicorn instantiates it per connection)."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout_seconds": seconds})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` that apply the vault's server limits."""
    trusted = list(settings.trusted_proxies)
    return {
        "http": head_timeout_protocol(settings.server_header_timeout_seconds),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.server_keep_alive_seconds,
        "limit_concurrency": settings.server_limit_concurrency,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or None,
        "server_header": False,  # no need to tell scanners which server this is
    }
