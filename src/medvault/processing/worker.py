"""A worker: claims jobs, runs their handlers with a heartbeat, and records the outcome.

One worker runs one job at a time; run more processes (or threads) for more throughput.
Stopping is cooperative: the current job either finishes or, if its handler checks
``JobContext.stopping`` and gives up, is released without spending an attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete

from medvault.db.engine import Database
from medvault.kit.clock import utcnow
from medvault.processing import queue
from medvault.processing.models import WorkerBeat
from medvault.processing.queue import Claim

logger = logging.getLogger("medvault.processing")

# How often a worker arms periodic jobs and refreshes its beat, whatever its load.
HOUSEKEEPING_SECONDS = 15.0


class JobInterrupted(Exception):
    """Raised by a handler that saw ``stopping`` and left its work for another worker."""


class JobContext:
    """What a handler gets: its payload, a way to report progress, and a stop signal."""

    def __init__(self, db: Database, held: Claim, stop: threading.Event, lost: threading.Event):
        self._db = db
        self._held = held
        self._stop = stop
        self._lost = lost

    @property
    def payload(self) -> Mapping[str, Any]:
        return self._held.payload

    @property
    def job_id(self) -> uuid.UUID:
        return self._held.id

    @property
    def attempt(self) -> int:
        return self._held.attempt

    @property
    def stopping(self) -> bool:
        """True when the worker is shutting down or has lost the lease: stop soon."""
        return self._stop.is_set() or self._lost.is_set()

    def progress(self, **values: Any) -> None:
        queue.report_progress(self._db, self._held, values)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early to stop; returns whether to stop."""
        self._stop.wait(seconds)
        return self.stopping


Handler = Callable[[JobContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    # Long enough for the slowest honest run between two heartbeats, short enough that a
    # killed worker's job is picked up again within a minute.
    lease: timedelta = timedelta(seconds=60)
    # Periodic kinds (the reconciler, the scrub) are kept armed by every worker.
    every: timedelta | None = None


@dataclass
class JobRegistry:
    kinds: dict[str, JobKind] = field(default_factory=dict)

    def register(self, kind: JobKind) -> None:
        if kind.name in self.kinds:
            raise ValueError(f"job kind {kind.name!r} registered twice")
        self.kinds[kind.name] = kind


Observer = Callable[[str, str, float], None]


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class Worker:
    def __init__(
        self,
        db: Database,
        registry: JobRegistry,
        *,
        owner: str | None = None,
        poll_interval: float = 1.0,
        observe: Observer | None = None,
    ) -> None:
        self._db = db
        self._registry = registry
        self._owner = owner or default_owner()
        self._poll = poll_interval
        self._observe = observe
        self.stop_event = threading.Event()

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def kinds(self) -> list[str]:
        return list(self._registry.kinds)

    def run(self) -> None:
        """Work until ``stop_event`` is set; sleeps ``poll_interval`` when the queue is empty."""
        last_housekeeping = 0.0
        while not self.stop_event.is_set():
            try:
                if time.monotonic() - last_housekeeping >= HOUSEKEEPING_SECONDS:
                    self.housekeeping()
                    last_housekeeping = time.monotonic()
                worked = self.run_one()
            except Exception:
                # The database went away mid-claim: keep the worker alive and try again.
                logger.exception("job claim failed; retrying after %.1fs", self._poll)
                worked = False
            if not worked:
                self.stop_event.wait(self._poll)
        self._forget()

    def housekeeping(self) -> None:
        """Arm periodic jobs and record that this worker is alive (for /readyz)."""
        now = utcnow()
        with self._db.session() as session:
            for kind in self._registry.kinds.values():
                if kind.every is not None:
                    queue.ensure_periodic(session, kind.name, kind.every)
            beat = session.get(WorkerBeat, self._owner)
            if beat is None:
                session.add(WorkerBeat(owner=self._owner, started_at=now, seen_at=now))
            else:
                beat.seen_at = now
            # Beats of workers silent for a day are gone for good: keep the table small.
            session.execute(delete(WorkerBeat).where(WorkerBeat.seen_at < now - timedelta(days=1)))
            session.commit()

    def _forget(self) -> None:
        try:
            with self._db.session() as session:
                session.execute(delete(WorkerBeat).where(WorkerBeat.owner == self._owner))
                session.commit()
        except Exception:
            logger.warning("could not remove this worker's beat on shutdown")

    def run_one(self) -> bool:
        """Claim and run at most one job. Returns whether there was one."""
        kinds = self._registry.kinds
        if not kinds:
            return False
        leases = {name: kind.lease for name, kind in kinds.items()}
        held = queue.claim(
            self._db,
            owner=self._owner,
            kinds=list(kinds),
            lease=max(leases.values()),
            leases=leases,
        )
        if held is None:
            return False
        kind = kinds[held.kind]
        self._execute(kind, held, kind.lease)
        return True

    def drain(self) -> int:
        """Run due jobs until none is left (``medvault worker --once``); returns how many."""
        self.housekeeping()
        ran = 0
        try:
            while not self.stop_event.is_set() and self.run_one():
                ran += 1
        finally:
            self._forget()
        return ran

    def _execute(self, kind: JobKind, held: Claim, lease: timedelta) -> None:
        lost = threading.Event()
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(held, lease, lost, done), daemon=True)
        beat.start()
        started = time.perf_counter()
        outcome = "done"
        try:
            result = kind.handler(JobContext(self._db, held, self.stop_event, lost))
        except JobInterrupted:
            outcome = "released"
            done.set()
            queue.release(self._db, held)
        except Exception as error:
            done.set()
            outcome = queue.fail(self._db, held, error)
            # Class name only in the log line, as in the table: no patient data.
            logger.warning(
                "job %s (%s) attempt %d/%d failed: %s",
                held.id,
                held.kind,
                held.attempt,
                held.max_attempts,
                queue.describe_error(error),
            )
        else:
            done.set()
            if not queue.complete(self._db, held, result):
                outcome = "lost"
                logger.warning("job %s (%s) finished after losing its lease", held.id, held.kind)
        finally:
            done.set()
            beat.join()
        if self._observe is not None:
            self._observe(held.kind, outcome, time.perf_counter() - started)

    def _heartbeat(
        self, held: Claim, lease: timedelta, lost: threading.Event, done: threading.Event
    ) -> None:
        interval = lease.total_seconds() / 3
        while not done.wait(interval):
            try:
                if not queue.heartbeat(self._db, held, lease=lease):
                    lost.set()
                    return
            except Exception:
                # A missed beat is survivable: the lease still has two thirds to run.
                logger.warning("heartbeat for job %s failed", held.id)
