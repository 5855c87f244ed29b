"""Rate limits for failed logins and for uploads (moving windows, the `limits` library).

With ``MEDVAULT_REDIS_URL`` the counters live in Redis and hold across every
instance; without it they are per process, and the ``medvault serve --workers N``
processes of one host each enforce 1/N of every limit (rounded up).

Login attempts count twice: per account (slows guessing one user's password from many
addresses) and per client address (slows spraying one password over many users).
An attempt is counted *before* its password is checked, in one atomic ``hit``, so 16
parallel guesses against a 5-a-minute account get 5 checks and 11 refusals instead
of 16 checks that all finish before the first failure is recorded. Once either
counter is full, logins answer 429 — even with the right password — until the window
moves on, so a guesser learns nothing from a late success. A success forgets the
account's count (not the address's).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from medvault.auth.password_slots import PasswordCheckSlots
from medvault.config import Settings
from medvault.kit.i18n import N_
from medvault.kit.problems import Problem, ServiceUnavailable

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "medvault:ratelimit"
# A stuck Redis must not hang every login; a couple of seconds is plenty on a LAN.
REDIS_TIMEOUT_SECONDS = 2.0


class TooManyRequests(Problem):
    status, slug, title = 429, "rate-limited", N_("Too many requests")

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, retry_after=retry_after)


def _shared(item: RateLimitItem, processes: int) -> RateLimitItem:
    """One process's share of a limit that ``processes`` enforce between them.

    However a client's attempts fall on the processes (the kernel hands each new
    connection to one of them), together they allow at most
    ``processes * ceil(amount / processes)``: the configured amount, rounded up to a
    multiple of the process count. One keep-alive connection meets a single share.
    """
    if processes <= 1:
        return item
    amount = max(1, math.ceil(item.amount / processes))
    return type(item)(amount, item.multiples, item.namespace)


def _account_key(username: str) -> str:
    # Hashed: attempted usernames are sometimes passwords typed into the wrong field,
    # and must not sit in Redis in plain text.
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]


@dataclass
class RateLimits:
    storage: Storage
    limiter: MovingWindowRateLimiter
    login_account: RateLimitItem
    login_ip: RateLimitItem
    upload: RateLimitItem
    # Not a rate but a concurrency bound; it lives here because every login path
    # already holds this object, and there is one per process.
    password_slots: PasswordCheckSlots

    @classmethod
    def from_settings(
        cls, settings: Settings, *, key_prefix: str = DEFAULT_KEY_PREFIX, processes: int = 1
    ) -> RateLimits:
        """``processes``: server processes on this host sharing the limits. Without
        Redis each keeps its own counters, so each allows its share of every limit."""
        share = 1 if settings.redis_url else processes
        if settings.redis_url:
            storage = storage_from_string(
                settings.redis_url,
                key_prefix=key_prefix,
                wrap_exceptions=True,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
        else:
            storage = storage_from_string("memory://")
        if not isinstance(storage, Storage):
            raise ValueError("MEDVAULT_REDIS_URL must name a synchronous storage (redis://…)")
        return cls(
            storage=storage,
            limiter=MovingWindowRateLimiter(storage),
            login_account=_shared(parse(settings.login_rate_limit_account), share),
            login_ip=_shared(parse(settings.login_rate_limit_ip), share),
            upload=_shared(parse(settings.upload_rate_limit), share),
            password_slots=PasswordCheckSlots(settings.max_concurrent_password_checks),
        )

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        reset = self.limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset - time.time()))

    def _login_counters(
        self, username: str, client_ip: str | None
    ) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        return [
            (self.login_account, ("login-account", _account_key(username))),
            (self.login_ip, ("login-ip", client_ip or "unknown")),
        ]

    def hit_login(self, *, username: str, client_ip: str | None) -> None:
        """Count a login attempt before its password is checked; 429 when over a limit.

        Fails closed: if Redis is down, logins are refused (503) rather than left
        unthrottled. Sessions already running do not need Redis and carry on.
        """
        try:
            for item, ids in self._login_counters(username, client_ip):
                # ``hit`` tests and counts in one step: parallel attempts cannot all
                # pass the test before any of them is counted.
                if not self.limiter.hit(item, *ids):
                    raise TooManyRequests(
                        N_("Too many failed logins. Try again later."),
                        retry_after=self._retry_after(item, *ids),
                    )
        except StorageError as exc:
            logger.error("rate-limit storage unavailable: %s", exc.storage_error)
            raise ServiceUnavailable(
                N_("Logins are paused: the rate limiter is unavailable.")
            ) from exc

    def login_succeeded(self, *, username: str) -> None:
        """Forget the account's failures (not the address's: one valid account must
        not let a sprayer reset the per-address count)."""
        item, ids = self._login_counters(username, None)[0]
        try:
            self.limiter.clear(item, *ids)
        except StorageError as exc:
            logger.error("could not reset a login counter: %s", exc.storage_error)

    def hit_upload(self, *, actor_id: str) -> None:
        """Count one upload by ``actor_id``; 429 once over the limit.

        Fails open: this limit guards fairness, not secrets, and an outage of Redis
        should not stop clinical documents from being stored.
        """
        try:
            if self.limiter.hit(self.upload, "upload", actor_id):
                return
            retry_after = self._retry_after(self.upload, "upload", actor_id)
        except StorageError as exc:
            logger.warning("upload rate limit not applied: %s", exc.storage_error)
            return
        raise TooManyRequests(N_("Too many uploads. Slow down."), retry_after=retry_after)

    def reset(self) -> None:
        """Drop every counter under this instance's key prefix."""
        self.storage.reset()
