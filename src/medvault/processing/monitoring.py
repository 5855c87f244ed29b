"""What operators watch about the queue: metrics, and whether workers are keeping up.

Counters and durations are recorded by the workers of each process. Queue depth and
the age of the oldest due job are read from the table when ``/metrics`` is scraped, so
every web instance reports the whole cluster's queue, whichever process did the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
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
    # (kind, state, count) and (kind, age of its oldest due job in seconds).
    depths: tuple[tuple[str, str, int], ...] = ()
    oldest_by_kind: tuple[tuple[str, float], ...] = ()

    @property
    def stalled(self) -> bool:
        """Work is waiting past BACKLOG_AFTER and no worker is alive to take it."""
        return self.workers_alive == 0 and self.oldest_due_seconds > BACKLOG_AFTER.total_seconds()

    @property
    def backlogged(self) -> bool:
        return self.oldest_due_seconds > BACKLOG_AFTER.total_seconds()

    def metric_families(self) -> list[Metric]:
        """The queue's gauges as of this reading, for one scrape.

        Built per scrape rather than kept in ``Gauge`` objects: a process's gauge holds
        the last value it set, and with several server processes (prometheus_client's
        multiprocess mode) each would report its own stale copy of the queue.
        """
        depth = GaugeMetricFamily(
            "medvault_jobs", "Jobs in the queue by kind and state", labels=["kind", "state"]
        )
        for kind, state, count in self.depths:
            depth.add_metric([kind, state], count)
        oldest = GaugeMetricFamily(
            "medvault_jobs_oldest_due_seconds",
            "Age of the oldest job due to run, by kind",
            labels=["kind"],
        )
        for kind, age in self.oldest_by_kind:
            oldest.add_metric([kind], age)
        alive = GaugeMetricFamily("medvault_workers_alive", "Workers that reported in recently")
        alive.add_metric([], self.workers_alive)
        return [depth, oldest, alive]


def queue_health(db: Database) -> QueueHealth:
    """Read the queue's shape from the table."""
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
    dead = sum(count for _, state, count in counts if state == JobState.DEAD)
    ages = tuple(
        (kind, max(0.0, (now - run_after).total_seconds())) for kind, run_after, _ in oldest
    )
    return QueueHealth(
        workers_alive=alive or 0,
        due=sum(count for _, _, count in oldest),
        oldest_due_seconds=max((age for _, age in ages), default=0.0),
        dead=dead,
        depths=tuple((kind, str(state), count) for kind, state, count in counts),
        oldest_by_kind=ages,
    )
