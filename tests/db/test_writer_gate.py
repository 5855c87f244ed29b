"""SQLite writers queue on one file lock shared by every process on the database.

``medvault serve --workers N`` runs several processes on one SQLite file. Each write
transaction holds an exclusive ``flock`` on ``<database>.writer-lock`` from BEGIN to
COMMIT, so writers of other processes wait in the kernel instead of polling SQLite's
busy handler. A second open of the lock file stands in for another process here:
``flock`` locks belong to an open file description, so they conflict even within one
process exactly as they do between two.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from medvault.db.engine import Database


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'gate.db'}")
    with db.session() as session:
        session.execute(text("CREATE TABLE rows (n INTEGER)"))
        session.commit()
    yield db
    db.dispose()


def _try_lock(path: Path) -> int | None:
    """The lock file's descriptor if an exclusive lock was free, else None."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def test_a_write_transaction_holds_the_file_lock_until_commit(
    database: Database, tmp_path: Path
) -> None:
    lock_path = tmp_path / "gate.db.writer-lock"
    with database.session() as session:
        session.execute(text("INSERT INTO rows VALUES (1)"))
        assert _try_lock(lock_path) is None  # another process would wait here
        session.commit()
    fd = _try_lock(lock_path)
    assert fd is not None
    os.close(fd)
    assert oct(lock_path.stat().st_mode & 0o777) == oct(0o600)


def test_readers_never_take_the_file_lock(database: Database, tmp_path: Path) -> None:
    held = _try_lock(tmp_path / "gate.db.writer-lock")
    assert held is not None
    try:
        with database.read_session() as session:
            assert session.execute(text("SELECT count(*) FROM rows")).scalar_one() == 0
    finally:
        os.close(held)


def test_a_writer_waits_for_another_process_holding_the_lock(
    database: Database, tmp_path: Path
) -> None:
    held = _try_lock(tmp_path / "gate.db.writer-lock")
    assert held is not None
    entered = threading.Event()

    def write() -> None:
        with database.session() as session:
            entered.set()
            session.execute(text("INSERT INTO rows VALUES (2)"))
            session.commit()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        # BEGIN IMMEDIATE runs on the first statement; it cannot get past the lock.
        writer.join(timeout=1.0)
        assert writer.is_alive()
    finally:
        os.close(held)  # closing the descriptor releases the lock, as a process death does
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert entered.is_set()
    with database.read_session() as session:
        assert session.execute(text("SELECT n FROM rows")).scalars().all() == [2]


def test_the_gate_opens_only_after_sqlite_has_committed(database: Database, tmp_path: Path) -> None:
    # SQLAlchemy fires its "commit" event before it commits. Had the gate opened
    # there, the next writer would meet a COMMIT still running, get SQLITE_BUSY and
    # sleep in SQLite's busy handler. At the moment the gate opens, another
    # connection that will not wait at all must get the write lock at once.
    gate = database._gate
    assert gate is not None
    other = sqlite3.connect(tmp_path / "gate.db", timeout=0, isolation_level=None)
    outcomes: list[str] = []
    real_leave = gate.leave

    def leave(info: dict[str, Any]) -> None:
        if info.get("medvault_writer_gate_held"):
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                outcomes.append("free")
            except sqlite3.OperationalError as error:
                outcomes.append(str(error))
        real_leave(info)

    gate.leave = leave  # type: ignore[method-assign]
    try:
        with database.session() as session:
            session.execute(text("INSERT INTO rows VALUES (3)"))
            session.commit()
    finally:
        gate.leave = real_leave  # type: ignore[method-assign]
        other.close()
    assert outcomes == ["free"]
    with database.read_session() as session:
        assert session.execute(text("SELECT n FROM rows")).scalars().all() == [3]
