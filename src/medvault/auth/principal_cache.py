"""Who is calling, without looking it up again on every request.

Resolving a credential (API token, JWT access token, portal cookie) to a principal
costs a session, one or two ORM queries and, for a JWT, an Ed25519 verification. A
client sends the same credential many times a minute, so each process keeps what it
resolved for a few seconds (``MEDVAULT_PRINCIPAL_CACHE_SECONDS``; 0 turns this off).

Why a cached principal is never served after it stopped being true:

* **Revocations** (token, session family, logout, disabled user, new password,
  break-glass): each bumps the one-row ``auth_epoch`` counter *in the same
  transaction* as the change (``auth.repository.bump_auth_epoch``). Every request
  reads the counter (one primary-key read on a bare autocommit connection) *before*
  it would look the credential up, and an entry is served only while the counter
  still reads what it read when that entry was looked up. A change committed by any
  process, on this host or another one on the same database, is therefore visible
  to the very next request everywhere: there is no window and no message to lose.
  The counter is compared for equality, so even a restored backup (the counter going
  back) empties the caches.
* **Expiry**: each entry carries its credential's own end (the token's ``expires_at``,
  the JWT's ``exp`` plus the same clock-skew leeway the decoder allows, the portal
  session's absolute and idle limits) and is dropped at that instant, not at the TTL.
* **Everything else** (an operator editing rows by hand, a bug that forgets to bump):
  bounded by the TTL.
* **Failures**: if the counter cannot be read (no row, the database unreachable, the
  epoch pool exhausted), nothing is served from or stored in the cache.

Keys are SHA-256 digests of the credential: the cache never holds a token, and
nothing here logs one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from medvault.auth.principal import Principal
from medvault.auth.repository import READ_AUTH_EPOCH_SQL
from medvault.kit.clock import utcnow

if TYPE_CHECKING:
    from medvault.auth.web_sessions import ActiveWebSession

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Far more live credentials than one instance sees within a TTL; a bound on memory only.
MAX_ENTRIES = 10_000
# The epoch pool: enough for the request threads of one process; a request that cannot
# get a connection within the timeout resolves without the cache instead of waiting.
# No overflow: SQLAlchemy closes an overflow connection when it is returned, so under
# load a pool of 4 + 16 overflow kept opening new PostgreSQL connections (200 in 40 s of
# bench/small_files.py load on two processes); 16 that stay open opened 16 in all.
EPOCH_POOL_SIZE = 16
EPOCH_POOL_OVERFLOW = 0
EPOCH_POOL_TIMEOUT_SECONDS = 0.5


def credential_key(kind: str, credential: str) -> str:
    """The cache key for a credential: a digest, so no token is ever held in memory here."""
    return hashlib.sha256(f"{kind}:{credential}".encode()).hexdigest()


class AuthEpochReader:
    """Reads the auth epoch with one statement on a small pool of its own.

    Its own engine, because the app's is built for transactions: every checkout pings
    (a round trip on PostgreSQL) and every read opens and ends a transaction (two
    more). Here each read is a single autocommit ``SELECT`` of a primary key; a dead
    connection fails that read, which then resolves uncached, and the pool replaces it.
    """

    def __init__(self, url: URL) -> None:
        self._url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._failing = False

    def _get_engine(self) -> Engine:
        # Made on first use: CLI commands build a Runtime and never authenticate.
        with self._lock:
            if self._engine is None:
                kwargs: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "hide_parameters": True}
                if self._url.get_backend_name() == "sqlite":
                    kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
                if self._url.database not in (None, "", ":memory:"):  # a pooled database
                    kwargs.update(
                        pool_size=EPOCH_POOL_SIZE,
                        max_overflow=EPOCH_POOL_OVERFLOW,
                        pool_timeout=EPOCH_POOL_TIMEOUT_SECONDS,
                    )
                self._engine = create_engine(self._url, **kwargs)
            return self._engine

    @property
    def engine(self) -> Engine:
        return self._get_engine()

    def read(self) -> int | None:
        """The current epoch, or None when it cannot be known (then nothing is cached)."""
        try:
            with self._get_engine().connect() as connection:
                value = connection.exec_driver_sql(READ_AUTH_EPOCH_SQL).scalar()
        except SQLAlchemyError as error:
            if not self._failing:  # once per outage, not once per request
                logger.warning("principal cache off: auth epoch unreadable (%s)", type(error))
            self._failing = True
            return None
        self._failing = False
        return int(value) if value is not None else None

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


@dataclass(frozen=True)
class Expiring(Generic[T]):
    """A resolved value and the instant its credential stops being valid (None: never)."""

    value: T
    valid_until: datetime | None


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    epoch: int
    stored_at: float
    valid_until: datetime | None


class PrincipalCache(Generic[T]):
    """Per-process map from credential digest to what it resolved to (see module doc)."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        epoch: Callable[[], int | None],
        max_entries: int = MAX_ENTRIES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._epoch = epoch
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._entries: dict[str, _Entry[T]] = {}
        self._lock = threading.Lock()
        self._seen_epoch: int | None = None
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    def resolve(self, key: str, load: Callable[[], Expiring[T] | None]) -> T | None:
        """The value for ``key``: cached if still valid, else ``load()`` (and cached).

        ``load`` returns None for a refused credential; refusals are never cached, so
        a token created or a user enabled a moment ago works on its first request.
        """
        if not self.enabled:
            found = load()
            return found.value if found is not None else None
        # Read before the lookup: a change committed after this read moves the epoch
        # past what the entry records, so the entry dies with the change.
        epoch = self._epoch()
        now = self._monotonic()
        if epoch is not None:
            hit = self._get(key, epoch, now)
            if hit is not None:
                return hit
        found = load()
        if found is None:
            return None
        if epoch is not None:
            self._put(key, _Entry(found.value, epoch, now, found.valid_until))
        return found.value

    def _get(self, key: str, epoch: int, now: float) -> T | None:
        with self._lock:
            if epoch != self._seen_epoch:
                # Everything stored under another epoch is dead: drop it all at once.
                self._entries.clear()
                self._seen_epoch = epoch
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            if (
                entry.epoch != epoch
                or now - entry.stored_at >= self.ttl_seconds
                or (entry.valid_until is not None and utcnow() >= entry.valid_until)
            ):
                del self._entries[key]
                self.misses += 1
                return None
            self.hits += 1
            return entry.value

    def _put(self, key: str, entry: _Entry[T]) -> None:
        if entry.valid_until is not None and utcnow() >= entry.valid_until:
            return  # already over (a portal session due for its activity write)
        with self._lock:
            if entry.epoch != self._seen_epoch:
                return  # another request saw a newer epoch meanwhile: this one is stale
            self._entries.pop(key, None)
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]  # the oldest entry
            self._entries[key] = entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class PrincipalCaches:
    """One process's caches: bearer credentials and portal sessions, one epoch reader."""

    epoch: AuthEpochReader
    bearer: PrincipalCache[Principal]
    web: PrincipalCache[ActiveWebSession]

    @classmethod
    def create(cls, *, url: URL, ttl_seconds: float) -> PrincipalCaches:
        reader = AuthEpochReader(url)
        return cls(
            epoch=reader,
            bearer=PrincipalCache(ttl_seconds=ttl_seconds, epoch=reader.read),
            web=PrincipalCache(ttl_seconds=ttl_seconds, epoch=reader.read),
        )

    def close(self) -> None:
        self.epoch.dispose()
