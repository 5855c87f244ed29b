"""A process-wide bound on concurrent password hashing.

argon2id is memory-hard on purpose: each verification takes 64 MiB and about 0.1 s
of CPU. Without a bound, 24 parallel anonymous logins raised the server's RSS by
~900 MiB and stalled every other request. Logins therefore take a slot first; when
none frees up within ``wait_seconds`` they are refused (503 with ``Retry-After``)
instead of queueing without end. Unknown usernames take a slot too (they verify
against a dummy hash), so the bound does not tell them apart from real accounts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from medvault.kit.i18n import N_
from medvault.kit.problems import ServiceUnavailable

# Long enough to ride out a burst of honest logins, short enough that a flood holds
# threads only briefly.
DEFAULT_WAIT_SECONDS = 1.0
RETRY_AFTER_SECONDS = 1


class LoginBusy(ServiceUnavailable):
    slug, title = "login-busy", N_("Too many logins are being checked right now")

    def __init__(self) -> None:
        super().__init__(
            N_("Too many logins are being checked at once. Try again in a moment."),
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            retry_after=RETRY_AFTER_SECONDS,
        )


class PasswordCheckSlots:
    """A bounded semaphore with counters that tests and metrics can read."""

    def __init__(self, size: int, *, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        if size < 1:
            raise ValueError("at least one password check must be allowed")
        self.size = size
        self.wait_seconds = wait_seconds
        self._semaphore = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self.in_use = 0
        self.peak = 0  # the most slots ever held at once: never above ``size``
        self.checks = 0  # hash computations run under a slot
        self.refused = 0

    def _enter(self) -> None:
        with self._lock:
            self.in_use += 1
            self.checks += 1
            self.peak = max(self.peak, self.in_use)

    def _leave(self) -> None:
        with self._lock:
            self.in_use -= 1
        self._semaphore.release()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for one hash computation; LoginBusy (503) if none frees up in time."""
        if not self._semaphore.acquire(timeout=self.wait_seconds):
            with self._lock:
                self.refused += 1
            raise LoginBusy()
        self._enter()
        try:
            yield
        finally:
            self._leave()

    @contextmanager
    def slot_if_free(self) -> Iterator[bool]:
        """A slot only if one is free now (for optional work such as a rehash)."""
        acquired = self._semaphore.acquire(blocking=False)
        if acquired:
            self._enter()
        try:
            yield acquired
        finally:
            if acquired:
                self._leave()
