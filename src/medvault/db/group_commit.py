"""Group commit: concurrent small transactions share one commit.

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

Two kinds of work share a batch:
- whole new rows (the audit events of reads) are added together. They cannot conflict
  with one another, so one failed row is a failed database, not a bad request, and
  failing its neighbours with it loses nothing a retry would not redo;
- a unit of work (an upload's duplicate check, rows and audit event) runs in its own
  SAVEPOINT. What it refuses (a duplicate, a foreign patient) rolls back only its own
  savepoint and reaches only its own caller; its neighbours commit. Units run in the
  order of their ``order`` key (the patient id for uploads), so that on PostgreSQL
  every batch takes its patients' row locks in one global order and two batches in
  two processes cannot deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from prometheus_client import Histogram

from medvault.kit.problems import Problem

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from medvault.db.engine import Database

T = TypeVar("T")

# Enough to amortise a commit over every request a busy process has in flight, small
# enough that one INSERT stays cheap.
MAX_BATCH_ROWS = 256
# What a unit of work counts for against that cap: an upload writes about six rows.
UNIT_ROWS = 8

# How much sharing happens: units of work (uploads) per committed batch that held any.
BATCH_UNITS = Histogram(
    "medvault_group_commit_units",
    "Units of work (uploads) committed together in one shared transaction",
    buckets=(1, 2, 4, 8, 16, 32),
)


class GroupCommitFailed(Exception):
    """The shared transaction holding a caller's rows failed; none of them exist."""


class _Ticket(Generic[T]):
    __slots__ = (
        "before_commit",
        "done",
        "error",
        "isolated",
        "order",
        "own",
        "result",
        "rows",
        "work",
    )

    def __init__(
        self,
        work: Callable[[Session], T],
        *,
        rows: int,
        isolated: bool,
        order: str,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self.work = work
        self.before_commit = before_commit
        self.rows = rows
        self.isolated = isolated
        self.order = order
        self.done = False
        self.result: T | None = None
        # The caller's own refusal (raised as is) or the batch's failure (wrapped).
        self.error: BaseException | None = None
        self.own = False


class GroupCommit:
    """Commits work from many threads in shared transactions on one database."""

    def __init__(self, database: Database, *, max_rows: int = MAX_BATCH_ROWS) -> None:
        self._database = database
        self._max_rows = max_rows
        self._changed = threading.Condition()
        self._queue: list[_Ticket[object]] = []
        self._leading = False
        # Commits made, to show how much sharing happened (tests/db/test_group_commit.py).
        self.batches = 0

    def commit(self, rows: Sequence[object]) -> None:
        """Insert ``rows`` and return once they are committed.

        Raises GroupCommitFailed (from the database's error) when their batch failed.
        """

        def add(session: Session) -> None:
            session.add_all(rows)

        self._wait(_Ticket(add, rows=len(rows), isolated=False, order=""))

    def run(
        self,
        work: Callable[[Session], T],
        *,
        order: str,
        before_commit: Callable[[], None] | None = None,
    ) -> T:
        """Run ``work`` in a savepoint of a shared transaction; return once committed.

        ``before_commit`` is called (on the leader's thread) once everything in the
        batch has been written and just before the COMMIT is sent, if ``work`` was not
        refused: from then on the outcome may be unknown even when the commit raises.
        A batch that fails before that point certainly committed nothing.

        ``work`` runs on whichever thread leads the batch, so it must take everything
        it needs as arguments, not from thread-local or context state. A problem it
        raises (a refusal: its savepoint was rolled back, the batch went on) is raised
        here as is. Anything else fails the whole batch: GroupCommitFailed means the
        shared transaction failed and nothing of ``work`` exists.
        """
        ticket = _Ticket(
            work, rows=UNIT_ROWS, isolated=True, order=order, before_commit=before_commit
        )
        self._wait(cast("_Ticket[object]", ticket))
        return cast(T, ticket.result)

    def _wait(self, ticket: _Ticket[object]) -> None:
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
        if ticket.error is None:
            return
        if ticket.own:
            raise ticket.error
        # A fresh exception per thread: one instance raised in many threads at once
        # would have its traceback rewritten under them.
        raise GroupCommitFailed("the batch holding this work did not commit") from ticket.error

    def _take(self) -> list[_Ticket[object]]:
        # Whole tickets, oldest first, up to the row cap (at least one ticket).
        batch: list[_Ticket[object]] = []
        count = 0
        while self._queue and (not batch or count + self._queue[0].rows <= self._max_rows):
            ticket = self._queue.pop(0)
            batch.append(ticket)
            count += ticket.rows
        return batch

    def _lead(self, batch: list[_Ticket[object]]) -> None:
        error: BaseException | None = None
        try:
            with self._database.session() as session:
                outer = session.begin()
                for ticket in sorted(batch, key=lambda t: t.order):
                    if not ticket.isolated:
                        ticket.work(session)
                        continue
                    try:
                        with session.begin_nested():
                            ticket.result = ticket.work(session)
                    except Problem as refusal:  # the caller's own answer, for it alone
                        if session.get_transaction() is not outer or not outer.is_active:
                            # Its work rolled back the whole transaction (a failed audit
                            # insert does, to fail closed): the batch is lost.
                            raise
                        ticket.error, ticket.own = refusal, True
                # Everything is written before anyone hears that the commit is under
                # way, so a failed write is a known rollback, not an unknown outcome.
                session.flush()
                for ticket in batch:
                    if ticket.before_commit is not None and not ticket.own:
                        ticket.before_commit()
                outer.commit()
        except BaseException as exc:  # every waiter must hear how its batch ended
            error = exc
        with self._changed:
            for ticket in batch:
                if not ticket.own:
                    ticket.error = error
                ticket.done = True
            if error is None:
                self.batches += 1
                units = sum(1 for ticket in batch if ticket.isolated and ticket.error is None)
                if units:
                    BATCH_UNITS.observe(units)
            self._leading = False
            self._changed.notify_all()
