"""Engines and sessions for one database, with SQLite tuned for concurrent use."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from sqlalchemy.orm import Session, sessionmaker

from medvault.db.group_commit import GroupCommit
from medvault.kit.private_files import ensure_private_file

SQLITE_BUSY_TIMEOUT_MS = 30_000


READ_ONLY_OPTION = "medvault_read_only"
_GATE_HELD = "medvault_writer_gate_held"


SQLITE_POOL_SIZE = 40
# Seconds libpq may take to connect (TCP and the startup handshake), unless the URL says.
PG_CONNECT_TIMEOUT = "10"


class SqliteWriterGate:
    """Hands SQLite's single write lock from writer to writer, in this process and
    across the processes that share the database file.

    SQLite lets one writer in at a time. Without this gate, every waiting writer polls
    SQLite's busy handler, which sleeps up to 100 ms between tries: under 16 concurrent
    clients that made p99 latency 0.8 s although the server was mostly idle. Waiting
    on a lock instead wakes the next writer the moment the previous one finishes.

    Two levels: a thread lock, so one thread per process queues for the file, then an
    exclusive ``flock`` on ``<database>.writer-lock`` shared by every process on the
    file (the ``medvault serve --workers N`` processes, a worker or a CLI command beside
    them). ``flock`` waits in the kernel and wakes the next process at once, and the
    kernel drops it when its holder dies, even by SIGKILL. The file wait has no timeout
    of its own: a holder keeps it for one transaction, and only a stopped (not dead)
    process could keep others waiting.
    """

    def __init__(self, timeout_seconds: float, lock_path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._timeout = timeout_seconds
        self._lock_path = lock_path
        self._file: int | None = None

    def _lock_file(self) -> int:
        # Opened on first use (and again after close(): a disposed engine may reconnect).
        assert self._lock_path is not None
        if self._file is None:
            ensure_private_file(self._lock_path)
            self._file = os.open(self._lock_path, os.O_RDWR | os.O_CLOEXEC)
        return self._file

    def enter(self, info: dict[str, Any]) -> None:
        if not self._lock.acquire(timeout=self._timeout):
            raise SQLAlchemyOperationalError(
                "BEGIN IMMEDIATE", None, TimeoutError("SQLite writer gate timed out")
            )
        if self._lock_path is not None:
            try:
                fcntl.flock(self._lock_file(), fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise
        info[_GATE_HELD] = True

    def leave(self, info: dict[str, Any]) -> None:
        if info.pop(_GATE_HELD, False):
            if self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._lock.release()

    def close(self) -> None:
        # Not while a writer of this process holds the file lock; a writer that never
        # finishes keeps the descriptor open rather than losing its lock under it.
        if not self._lock.acquire(timeout=self._timeout):
            return
        try:
            if self._file is not None:
                os.close(self._file)
                self._file = None
        finally:
            self._lock.release()


def _tune_sqlite(engine: Engine, gate: SqliteWriterGate) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged upload must survive power loss, not just a crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted and overwritten content is zeroed, not left in free pages: a destroyed
        # record (governance.destruction) must leave no readable byte in the file.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            # WAL readers never block or wait: a deferred transaction sees a snapshot.
            connection.exec_driver_sql("BEGIN")
            return
        # IMMEDIATE takes the write lock up front. A deferred transaction that reads
        # and then writes can fail with SQLITE_BUSY at once, ignoring busy_timeout,
        # when another writer committed in between.
        gate.enter(connection.info)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            gate.leave(connection.info)
            raise

    @event.listens_for(engine, "commit")
    def _on_commit(connection: Connection) -> None:
        # SQLAlchemy fires this *before* it commits. Leaving the gate here let the next
        # writer's BEGIN IMMEDIATE meet a COMMIT (and its fsync) still running, fail
        # with SQLITE_BUSY and sleep in SQLite's busy handler: the polling the gate
        # exists to avoid. So commit here, then leave; SQLAlchemy's own commit that
        # follows finds no transaction and does nothing. Should this commit fail, the
        # gate stays held: SQLAlchemy's commit raises the error properly wrapped, and
        # the rollback (or the checkin below) leaves it.
        if connection.info.get(_GATE_HELD):
            try:
                connection.connection.driver_connection.commit()  # type: ignore[union-attr]
            except sqlite3.Error:
                return
        gate.leave(connection.info)

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection: Connection) -> None:
        gate.leave(connection.info)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        # Belt and braces: a connection never goes back to the pool holding the gate.
        gate.leave(record.info)


class Database:
    """One database: its engine and a session factory."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = make_url(url)
        if self.url.get_backend_name() == "postgresql" and "connect_timeout" not in self.url.query:
            # libpq waits for a host that never answers (a dropped route, a firewall
            # that discards) as long as TCP does: minutes, with the request and its
            # thread held. Bounded, the request is a 503 database-unavailable instead.
            # In the URL, so every engine made from it (the principal cache's, Alembic's,
            # backups') has it too; a URL that sets its own keeps it.
            self.url = self.url.update_query_dict({"connect_timeout": PG_CONNECT_TIMEOUT})
        # hide_parameters: a failing statement's message (logged, or carried in an
        # exception) must never hold the bound values, which are patient data.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        lock_path: Path | None = None
        if self.url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            database = self.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                # Owner-only from the first byte; SQLite gives its -wal/-shm this mode too.
                ensure_private_file(Path(database))
                lock_path = Path(f"{database}.writer-lock")
                # A file cannot drop a connection, so no ping per checkout; and a pool as
                # large as the server's thread pool (anyio's 40), so connections are not
                # closed and reopened (with their PRAGMAs) under load, as SQLAlchemy's
                # default of 5 + 10 overflow did.
                kwargs.update(pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_SIZE)
        else:
            # A server restart or a proxy's idle timeout can drop a connection: the
            # ping per checkout turns that into a reconnect instead of a failed request.
            kwargs.update(pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size * 2)
        self.engine = create_engine(self.url, **kwargs)
        self._gate: SqliteWriterGate | None = None
        if self.is_sqlite:
            self._gate = SqliteWriterGate(SQLITE_BUSY_TIMEOUT_MS / 1000, lock_path)
            _tune_sqlite(self.engine, self._gate)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
        )
        # Insert-only transactions of many threads (reads' audit events) share commits.
        self.group_commit = GroupCommit(self)

    def read_through(self, base: type[Any], other: Database) -> None:
        """In this database's sessions, read ``base``'s models from ``other``, read-only.

        The clinical sessions read demographics this way (SQLAlchemy's vertical
        partitioning): a statement about ``Patient`` goes to the patient database, and
        a statement joining it to a clinical table fails, as it must, since the two
        live apart. Read-only, so a clinical transaction never takes the patient
        database's write lock: changes to demographics go through the patient
        database's own session, committed after the clinical one that audits them.
        """
        reading = other.engine.execution_options(**{READ_ONLY_OPTION: True})
        self._sessions.configure(binds={base: reading})
        self._read_sessions.configure(binds={base: reading})

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that rolls back on error; callers commit explicitly."""
        with self._sessions() as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for lookups only: on SQLite it neither takes nor waits for the write lock."""
        with self._read_sessions() as session:
            yield session

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def redacted_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._gate is not None:
            self._gate.close()
