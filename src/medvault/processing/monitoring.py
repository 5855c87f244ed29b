"""What operators watch about the queue: metrics, and whether workers are keeping up.

Counters and durations are recorded by the workers of each process. Queue depth and
the age of the oldest due job are read from the table when ``/metrics`` is scraped, so
every web instance reports the whole cluster's queue, whichever process did the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select

from medvault.db.engine import Database
from medvault.kit.clock import utcnow
from medvault.processing.models import Job, JobState, WorkerBeat
from medvault.processing.worker import HOUSEKEEPING_SECONDS

JOB_RUNS = Counter(
    "medvault_job_runs_total", "Job attempts by kind and outcome", ["kind", "outcome"]
)
JOB_SECONDS = Histogram(
    "medvault_job_duration_seconds",
    "Time one job attempt took",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
)
QUEUE_DEPTH = Gauge("medvault_jobs", "Jobs in the queue by kind and state", ["kind", "state"])
OLDEST_DUE = Gauge(
    "medvault_jobs_oldest_due_seconds", "Age of the oldest job due to run, by kind", ["kind"]
)
WORKERS_ALIVE = Gauge("medvault_workers_alive", "Workers that reported in recently")

# A worker refreshes its beat every HOUSEKEEPING_SECONDS; three missed beats is dead.
ALIVE_WITHIN = timedelta(seconds=3 * HOUSEKEEPING_SECONDS)
# A due job waiting this long means the workers are not keeping up (or there are none).
BACKLOG_AFTER = timedelta(minutes=2)


def observe(kind: str, outcome: str, seconds: float) -> None:
    """The worker's observer: one call per finished attempt."""
    JOB_RUNS.labels(kind, outcome).inc()
    JOB_SECONDS.labels(kind).observe(seconds)


@dataclass(frozen=True)
class QueueHealth:
    workers_alive: int
    due: int
    oldest_due_seconds: float
    dead: int

    @property
    def stalled(self) -> bool:
        """Work is waiting past BACKLOG_AFTER and no worker is alive to take it."""
        return self.workers_alive == 0 and self.oldest_due_seconds > BACKLOG_AFTER.total_seconds()

    @property
    def backlogged(self) -> bool:
        return self.oldest_due_seconds > BACKLOG_AFTER.total_seconds()


def queue_health(db: Database) -> QueueHealth:
    """Read the queue's shape, and refresh the gauges from it."""
    now = utcnow()
    with db.read_session() as session:
        counts = session.execute(
            select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
        ).all()
        oldest = session.execute(
            select(Job.kind, func.min(Job.run_after), func.count())
            .where(Job.state == JobState.READY, Job.run_after <= now)
            .group_by(Job.kind)
        ).all()
        alive = session.scalar(
            select(func.count())
            .select_from(WorkerBeat)
            .where(WorkerBeat.seen_at >= now - ALIVE_WITHIN)
        )
    QUEUE_DEPTH.clear()
    OLDEST_DUE.clear()
    due = dead = 0
    for kind, state, count in counts:
        QUEUE_DEPTH.labels(kind, state).set(count)
        dead += count if state == JobState.DEAD else 0
    oldest_seconds = 0.0
    for kind, run_after, count in oldest:
        age = max(0.0, (now - run_after).total_seconds())
        OLDEST_DUE.labels(kind).set(age)
        oldest_seconds = max(oldest_seconds, age)
        due += count
    WORKERS_ALIVE.set(alive or 0)
    return QueueHealth(
        workers_alive=alive or 0, due=due, oldest_due_seconds=oldest_seconds, dead=dead
    )
