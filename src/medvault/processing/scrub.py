"""The integrity scrub: every version re-read and its SHA-256 re-verified once per period.

Bit rot, a storage bug or tampering shows up on the next download, which may be years
away and at the worst moment. The scrub finds it first, quietly: a periodic job walks
the versions least recently verified (``verified_at``, or ``created_at`` for one never
scrubbed), rate-limited to ``MEDVAULT_SCRUB_MAX_BYTES_PER_SECOND``, and raises the same
corruption alarm as a failing download or ``medvault verify``.

Each run works until nothing is due or its time slice (most of the run interval) is
used up; progress lives in the rows (``verified_at``), so a run cut short by a restart
loses nothing and the next picks up where it stopped. Corruption is recorded by
``documents.integrity`` (the version is marked corrupt, audited, and an ERROR logged).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, func, or_, select, update

from medvault.audit.context import AuditContext
from medvault.documents.integrity import Outcome, check_version, record_checks
from medvault.documents.models import DocumentVersion, VersionState
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime

ACTOR = "integrity-scrub"
# How often the scrub job runs; each run may use most of this interval.
RUN_EVERY = timedelta(hours=1)
BATCH = 50


@dataclass
class ScrubReport:
    checked: int = 0
    bytes: int = 0
    failed: int = 0
    # Versions still due when the run's time slice ended (0: the scrub is caught up).
    still_due: int = 0

    def summary(self) -> dict[str, int]:
        return {
            "checked": self.checked,
            "bytes": self.bytes,
            "failed": self.failed,
            "still_due": self.still_due,
        }


def _due_filter(period: timedelta) -> ColumnElement[bool]:
    cutoff = utcnow() - period
    return or_(
        DocumentVersion.verified_at < cutoff,
        (DocumentVersion.verified_at.is_(None)) & (DocumentVersion.created_at < cutoff),
    )


def scrub(
    runtime: Runtime,
    *,
    time_slice: timedelta,
    wait: Callable[[float], bool] | None = None,
    period: timedelta | None = None,
    max_bytes_per_second: int | None = None,
) -> ScrubReport:
    """Verify due versions until none is due or ``time_slice`` is spent.

    ``wait(seconds)`` sleeps for the rate limit and returns True when the run must stop.
    """
    settings = runtime.settings
    wait = wait or _sleep
    period = timedelta(days=settings.scrub_period_days) if period is None else period
    rate = max_bytes_per_second or settings.scrub_max_bytes_per_second
    report = ScrubReport()
    started = time.monotonic()
    deadline = started + time_slice.total_seconds()
    due = _due_filter(period)
    context = AuditContext.system(ACTOR)
    stopped = False
    while not stopped and time.monotonic() < deadline:
        with runtime.clinical.read_session() as session:
            batch = list(
                session.scalars(
                    select(DocumentVersion)
                    .where(DocumentVersion.state != VersionState.DESTROYED, due)
                    .order_by(
                        func.coalesce(DocumentVersion.verified_at, DocumentVersion.created_at),
                        DocumentVersion.id,
                    )
                    .limit(BATCH)
                )
            )
        if not batch:
            return report
        for version in batch:
            check = check_version(runtime=runtime, version=version)
            record_checks(runtime, [(version, check)], context)
            report.failed += check.outcome is not Outcome.OK
            _mark_verified(runtime, version)
            report.checked += 1
            report.bytes += version.size
            # Never faster than the rate: sleep until the bytes read so far are "paid for".
            ahead = report.bytes / rate - (time.monotonic() - started)
            if (ahead > 0 and wait(ahead)) or time.monotonic() >= deadline:
                stopped = True
                break
    with runtime.clinical.read_session() as session:
        report.still_due = (
            session.scalar(
                select(func.count())
                .select_from(DocumentVersion)
                .where(DocumentVersion.state != VersionState.DESTROYED, due)
            )
            or 0
        )
    return report


def _mark_verified(runtime: Runtime, version: DocumentVersion) -> None:
    # Marked even when the check failed: the alarm is raised, and re-reading a corrupt
    # blob every hour would only repeat it. `medvault verify` re-checks on demand.
    with runtime.clinical.session() as session:
        session.execute(
            update(DocumentVersion)
            .where(DocumentVersion.id == version.id)
            .values(verified_at=utcnow())
        )
        session.commit()


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
