"""A PostgreSQL streaming replica for the clinical database's reads.

A request that may read from the replica gets a :class:`RoutedSession`: its SELECTs go
to the replica, and everything that writes (the flush of its audit event, any INSERT,
UPDATE, DELETE, ``FOR UPDATE`` or raw SQL) goes to the primary, so the read and its
audit event still commit in the one ``session.commit()`` the route already makes.

Whether a request reads from the replica at all is decided once, when its session is
opened (:meth:`ClinicalReplica.read_session`), by one query on the replica:

* it must answer (a replica outage sends reads to the primary, and the replica is not
  asked again for ``retry_seconds``), be in recovery, and be streaming;
* its replay lag must be at most ``max_lag_seconds``;
* it must have replayed the caller's **read-after fence**, the primary's WAL position
  after the caller's last write (``ops.read_fences`` hands it out with every write's
  response and reads it back), so a caller always sees their own writes;
* and the caller's ``check`` (the access policy's: the replica's authorisation rows
  for this caller are the primary's) must pass.

The README's design notes ("Read replicas") say why this rule and not another.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from medvault.db.engine import Database

logger = logging.getLogger(__name__)

T = TypeVar("T")

# "16/B374D848": a WAL position as PostgreSQL prints it (two hex numbers).
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")

# One round trip: is it a streaming standby, how far has it replayed, how far behind.
# The lag is 0 when everything received is replayed (an idle primary makes the last
# replay timestamp old without the replica being behind).
_STATE_SQL = text(
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
    " CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END,"
    # Its row exists while a WAL receiver runs; its columns are hidden from logins
    # without pg_read_all_stats, so only the row's presence is asked about.
    " EXISTS (SELECT FROM pg_stat_wal_receiver)"
)

_POSITION_SQL = text("SELECT pg_current_wal_insert_lsn()::text")


def parse_lsn(value: str | None) -> int | None:
    """A WAL position as a number, or None for anything that is not one."""
    if not value:
        return None
    match = _LSN.match(value.strip())
    if match is None:
        return None
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class ReplicaState:
    replayed: int
    lag_seconds: float


class RoutedSession(Session):
    """While ``on_replica``: SELECTs to the replica; writes, and anything else, to the primary."""

    primary_engine: Engine
    replica: ClinicalReplica | None = None
    on_replica: bool = False

    def get_bind(self, mapper: Any = None, clause: Any = None, **kwargs: Any) -> Any:
        if self.replica is None or not self.on_replica or self._flushing:
            return self.primary_engine
        if not isinstance(clause, Select) or clause._for_update_arg is not None:
            # Writes, raw SQL and locking reads: anything but a plain query.
            return self.primary_engine
        return self.replica.engine

    def to_primary(self) -> None:
        """From now on, everything (reads too) on the primary; what was pending is discarded."""
        self.rollback()
        self.on_replica = False


class ClinicalReplica:
    """The clinical database's replica, beside its primary."""

    def __init__(
        self,
        primary: Database,
        url: str,
        *,
        max_lag_seconds: float,
        retry_seconds: float,
        connect_timeout_seconds: int = 2,
        pool_size: int = 10,
    ) -> None:
        self.primary = primary
        self.url = make_url(url)
        if self.url.get_backend_name() != "postgresql":
            raise ValueError("a read replica needs PostgreSQL (MEDVAULT_DATABASE_REPLICA_URL)")
        self.engine = create_engine(
            self.url,
            hide_parameters=True,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            # A replica that does not answer must not hold a request for long: it is
            # skipped (and reads go to the primary) rather than waited for.
            connect_args={"connect_timeout": connect_timeout_seconds},
        )
        self.max_lag_seconds = max_lag_seconds
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._sessions = sessionmaker(class_=RoutedSession, expire_on_commit=False)

    def state(self) -> ReplicaState | None:
        """Its position and lag; None if it is down, skipped, or not a streaming standby."""
        if time.monotonic() < self._down_until:
            return None
        try:
            with self.engine.connect() as connection:
                row = connection.execute(_STATE_SQL).one()
        except SQLAlchemyError as exc:
            self.mark_down(exc)
            return None
        in_recovery, replayed, lag, streaming = row
        position = parse_lsn(replayed)
        if not in_recovery or not streaming or position is None:
            return None
        return ReplicaState(replayed=position, lag_seconds=float(lag))

    def mark_down(self, error: BaseException) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.retry_seconds
        # The error's kind only: its message may quote a statement.
        logger.warning(
            "read replica unavailable, reading from the primary: %s", type(error).__name__
        )

    def primary_position(self) -> int | None:
        """The primary's WAL position now: after a commit, a fence covering it."""
        # The insert position, not the write position: with synchronous_commit off a
        # commit returns before its WAL is written, and the fence must still cover it.
        with self.primary.engine.connect() as connection:
            return parse_lsn(connection.execute(_POSITION_SQL).scalar())

    def usable(self, *, fence: int | None) -> bool:
        state = self.state()
        if state is None or state.lag_seconds > self.max_lag_seconds:
            return False
        return fence is None or state.replayed >= fence

    @contextmanager
    def read_session(
        self, *, fence: int | None, check: Callable[[Session, Session], bool] | None = None
    ) -> Iterator[RoutedSession]:
        """A session reading from the replica when the rule allows, else from the primary.

        ``check(primary, replica)`` runs first on a pair of sessions of its own and may
        veto the replica (the access policy compares authorisation rows with it).
        """
        on_replica = self.usable(fence=fence)
        if on_replica and check is not None:
            try:
                with self.primary.read_session() as primary, Session(self.engine) as replica:
                    on_replica = check(primary, replica)
            except SQLAlchemyError:
                on_replica = False  # when in doubt, the primary
        session = self._sessions()
        session.primary_engine = self.primary.engine
        session.replica = self
        session.on_replica = on_replica
        with session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def on_replica(session: Session) -> bool:
    """Whether this session's reads go to a replica."""
    return isinstance(session, RoutedSession) and session.on_replica


def read_with_fallback(
    session: Session, read: Callable[[], T], *, miss: tuple[type[Exception], ...] = ()
) -> T:
    """Run ``read``; if it ran on the replica and the replica failed it, run it on the primary.

    A replica is allowed to be behind, never to break a read: a lost connection, or a
    query a hot standby cancelled (a conflict with recovery), repeats on the primary.
    With ``miss`` (a not-found error), a replica's "no such thing" is not believed
    either: a caller who knows an id learned it from a write the replica may not have
    replayed yet, so a point read of it is asked of the primary again.
    """
    if not isinstance(session, RoutedSession) or not session.on_replica:
        return read()
    try:
        return read()
    except DBAPIError as exc:
        lost = isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated
        if lost and session.replica is not None:
            session.replica.mark_down(exc)
        session.to_primary()
        return read()
    except miss:
        session.to_primary()
        return read()
