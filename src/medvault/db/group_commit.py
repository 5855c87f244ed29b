"""Group commit: concurrent small insert-only transactions share one commit.

A read's audit event must be durable before the first byte leaves, so every download
used to be its own transaction: on SQLite one ``BEGIN IMMEDIATE`` + fsync at a time,
queued on the writer gate; on PostgreSQL an INSERT and a COMMIT round trip each. Under
16 concurrent clients those commits were most of a download's wall time.

Here the first thread to arrive becomes the *leader*: it takes every row queued so
far, inserts them in one transaction and commits once (one fsync, one round trip for
the commit). Threads that arrive meanwhile queue for the next batch, whose leader is
the first of them to wake. Nobody waits for a timer, so a lone request commits at
once, exactly as before, and batches grow only when commits are the bottleneck.

Fail closed: a thread returns only after the commit holding its rows succeeded. If
the batch fails, every thread in it gets the error, and none of its rows exist.

Only whole new rows go through here (the audit events of reads): they cannot conflict
with one another, so one failed row is a failed database, not a bad request, and
failing its neighbours with it loses nothing a retry would not redo.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medvault.db.engine import Database

# Enough to amortise a commit over every request a busy process has in flight, small
# enough that one INSERT stays cheap.
MAX_BATCH_ROWS = 256


class GroupCommitFailed(Exception):
    """The shared transaction holding a caller's rows failed; none of them exist."""


class _Ticket:
    __slots__ = ("done", "error", "rows")

    def __init__(self, rows: Sequence[object]) -> None:
        self.rows = rows
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """Commits ORM rows from many threads in shared transactions on one database."""

    def __init__(self, database: Database, *, max_rows: int = MAX_BATCH_ROWS) -> None:
        self._database = database
        self._max_rows = max_rows
        self._changed = threading.Condition()
        self._queue: list[_Ticket] = []
        self._leading = False
        # Commits made, to show how much sharing happened (tests/db/test_group_commit.py).
        self.batches = 0

    def commit(self, rows: Sequence[object]) -> None:
        """Insert ``rows`` and return once they are committed.

        Raises GroupCommitFailed (from the database's error) when their batch failed.
        """
        ticket = _Ticket(rows)
        with self._changed:
            self._queue.append(ticket)
        while True:
            with self._changed:
                while not ticket.done and self._leading:
                    self._changed.wait()
                if ticket.done:
                    break
                # Nobody is committing: lead the next batch (ours, or older ones first
                # when more is queued than one batch holds).
                self._leading = True
                batch = self._take()
            self._lead(batch)
        if ticket.error is not None:
            # A fresh exception per thread: one instance raised in many threads at once
            # would have its traceback rewritten under them.
            raise GroupCommitFailed("the batch holding these rows did not commit") from (
                ticket.error
            )

    def _take(self) -> list[_Ticket]:
        # Whole tickets, oldest first, up to the row cap (at least one ticket).
        batch: list[_Ticket] = []
        count = 0
        while self._queue and (not batch or count + len(self._queue[0].rows) <= self._max_rows):
            ticket = self._queue.pop(0)
            batch.append(ticket)
            count += len(ticket.rows)
        return batch

    def _lead(self, batch: list[_Ticket]) -> None:
        error: BaseException | None = None
        try:
            with self._database.session() as session:
                for ticket in batch:
                    session.add_all(ticket.rows)
                session.commit()
        except BaseException as exc:  # every waiter must hear how its batch ended
            error = exc
        with self._changed:
            for ticket in batch:
                ticket.error = error
                ticket.done = True
            if error is None:
                self.batches += 1
            self._leading = False
            self._changed.notify_all()
