"""Enqueue, claim, finish and retry jobs: a table-backed queue on SQLite and PostgreSQL.

Enqueueing happens inside the caller's session and never commits (the transactional
outbox: a job exists exactly when the change that needs it committed). Everything a
worker does runs in its own short transaction.

Claims are compare-and-set on a fresh lease token. On PostgreSQL the candidate row is
taken with ``FOR UPDATE SKIP LOCKED``, so workers on many hosts never wait on each
other; on SQLite every write transaction is ``BEGIN IMMEDIATE`` (see ``db.engine``), so
the select-then-update pair is already serialised.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault.db.engine import Database
from medvault.kit.clock import utcnow
from medvault.processing.models import Job, JobState

DEFAULT_MAX_ATTEMPTS = 8
# First retry after about 10 s, doubling to at most an hour: clamd restarting or S3
# blipping recovers within the first few tries, a longer outage within the day.
BACKOFF_BASE = timedelta(seconds=10)
BACKOFF_CAP = timedelta(hours=1)
ERROR_LIMIT = 500

# Spreading retries needs no secrecy, only independence between processes.
_JITTER = random.Random()  # noqa: S311
_ACTIVE = (JobState.READY.value, JobState.RUNNING.value)


@dataclass(frozen=True)
class Claim:
    """A job a worker holds: valid while ``token`` matches the row and the lease lasts."""

    id: uuid.UUID
    kind: str
    payload: Mapping[str, Any]
    attempt: int
    max_attempts: int
    token: uuid.UUID


class SafeJobError(Exception):
    """A failure whose message is safe to store and show: ids and states, no patient data.

    Any other exception is recorded by its class name only, since messages from
    libraries can quote file names, titles or bytes of a document.
    """


def enqueue(
    session: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    dedupe_key: str | None = None,
    delay: timedelta = timedelta(0),
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    fresh: bool = False,
) -> Job:
    """Add a job to the caller's transaction. With a ``dedupe_key``, at most one is live.

    A finished job with the same key is re-armed instead of duplicated, so "scan this
    version again" reuses its row and its history stays in one place.

    ``fresh``: the key names something made in this very transaction (a new version),
    so no job can hold it yet: skip the lookup, and leave the INSERT to the caller's
    next flush, where SQLAlchemy batches it with the others. The key's unique index
    still refuses a duplicate should that ever be wrong.
    """
    now = utcnow()
    if dedupe_key is not None and not fresh:
        existing = session.scalars(select(Job).where(Job.dedupe_key == dedupe_key)).first()
        if existing is not None:
            if existing.state not in _ACTIVE:
                _rearm(existing, now + delay)
                existing.payload = json.dumps(dict(payload), sort_keys=True)
                session.flush()
            return existing
    job = Job(
        kind=kind,
        payload=json.dumps(dict(payload), sort_keys=True),
        dedupe_key=dedupe_key,
        state=JobState.READY,
        attempts=0,
        max_attempts=max_attempts,
        run_after=now + delay,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    if not fresh:
        session.flush()
    return job


def ensure_periodic(session: Session, kind: str, every: timedelta) -> None:
    """Keep exactly one job of a periodic ``kind`` armed, due ``every`` after the last run.

    Any number of workers call this; the dedupe key's unique constraint keeps one row,
    and re-arming a finished row twice to the same time is harmless. The first run is
    one interval after the first worker started, not at once: the row (and so the
    schedule) outlives restarts, and a reconciler that ran at the first start would
    judge every write in flight at that moment by the store's clock alone.
    """
    key = f"periodic:{kind}"
    now = utcnow()
    existing = session.scalars(select(Job).where(Job.dedupe_key == key)).first()
    if existing is None:
        try:
            with session.begin_nested():
                enqueue(session, kind, {}, dedupe_key=key, delay=every)
        except IntegrityError:
            pass  # another worker armed it a moment ago
        return
    if existing.state in _ACTIVE:
        return
    last = existing.finished_at or existing.updated_at
    _rearm(existing, max(now, last + every))
    session.flush()


def claim(
    db: Database,
    *,
    owner: str,
    kinds: Collection[str],
    lease: timedelta,
    leases: Mapping[str, timedelta] | None = None,
) -> Claim | None:
    """Take the oldest due job of one of ``kinds``, or one whose worker's lease ran out.

    The lease is ``leases[kind]`` for the claimed job's kind when given, else ``lease``:
    a killed worker's short job is picked up again as soon as that kind allows.
    """
    now = utcnow()
    with db.session() as session:
        due = and_(Job.state == JobState.READY, Job.run_after <= now)
        abandoned = and_(Job.state == JobState.RUNNING, Job.lease_expires_at < now)
        query = (
            select(Job)
            .where(Job.kind.in_(list(kinds)), or_(due, abandoned))
            .order_by(Job.run_after, Job.id)
            .limit(1)
        )
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        job = session.scalars(query).first()
        if job is None:
            session.rollback()
            return None
        if job.attempts >= job.max_attempts:
            # Its worker died on every attempt (a poison job that kills the process):
            # stop handing it out.
            _finish(job, JobState.DEAD, now)
            job.last_error = "WorkerLost: the lease expired on the last attempt"
            session.commit()
            return claim(db, owner=owner, kinds=kinds, lease=lease, leases=leases)
        if leases is not None:
            lease = leases.get(job.kind, lease)
        token = uuid.uuid4()
        job.state = JobState.RUNNING
        job.attempts += 1
        job.lease_token = token
        job.lease_owner = owner[:200]
        job.lease_expires_at = now + lease
        job.started_at = now
        job.updated_at = now
        session.commit()
        return Claim(
            id=job.id,
            kind=job.kind,
            payload=json.loads(job.payload),
            attempt=job.attempts,
            max_attempts=job.max_attempts,
            token=token,
        )


def heartbeat(db: Database, held: Claim, *, lease: timedelta) -> bool:
    """Extend the lease; False means another worker has the job now (or it was cancelled)."""
    now = utcnow()
    return _held_update(db, held, lease_expires_at=now + lease, updated_at=now)


def report_progress(db: Database, held: Claim, progress: Mapping[str, Any]) -> bool:
    return _held_update(
        db, held, progress=json.dumps(dict(progress), sort_keys=True), updated_at=utcnow()
    )


def complete(db: Database, held: Claim, result: Mapping[str, Any] | None = None) -> bool:
    now = utcnow()
    values: dict[str, Any] = {
        "state": JobState.DONE,
        "finished_at": now,
        "updated_at": now,
        "lease_token": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": None,
    }
    if result is not None:
        values["result"] = json.dumps(dict(result), sort_keys=True)
    return _held_update(db, held, **values)


def fail(
    db: Database, held: Claim, error: BaseException, *, rng: random.Random | None = None
) -> str:
    """Record a failed attempt: back off and retry, or park the job as dead. Returns the state."""
    now = utcnow()
    out_of_attempts = held.attempt >= held.max_attempts
    values: dict[str, Any] = {
        "last_error": describe_error(error),
        "updated_at": now,
        "lease_token": None,
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if out_of_attempts:
        values.update(state=JobState.DEAD, finished_at=now)
    else:
        values.update(state=JobState.READY, run_after=now + backoff(held.attempt, rng=rng))
    _held_update(db, held, **values)
    return str(values["state"])


def release(db: Database, held: Claim) -> bool:
    """Give a job back untouched (graceful shutdown): the attempt does not count."""
    now = utcnow()
    with db.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == held.id, Job.lease_token == held.token, Job.state == JobState.RUNNING)
            .values(
                state=JobState.READY,
                attempts=Job.attempts - 1,
                run_after=now,
                lease_token=None,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
        )
        session.commit()
        return _rowcount(result) == 1


def retry(session: Session, job_id: uuid.UUID) -> Job | None:
    """Operator action: run a dead, cancelled or waiting job again, from attempt one."""
    job = session.get(Job, job_id)
    if job is None or job.state == JobState.RUNNING:
        return None
    _rearm(job, utcnow())
    session.flush()
    return job


def cancel(session: Session, job_id: uuid.UUID) -> Job | None:
    """Operator action: a waiting job never runs; a running one is not finished by its worker."""
    job = session.get(Job, job_id)
    if job is None or job.state not in _ACTIVE:
        return None
    _finish(job, JobState.CANCELLED, utcnow())
    session.flush()
    return job


def backoff(attempt: int, *, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with equal jitter: half fixed, half random, capped.

    The random half spreads retries of many jobs that failed together (clamd restarting)
    so they do not return as one thundering herd.
    """
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (1 << min(max(attempt - 1, 0), 32)))
    half = ceiling / 2
    return half + half * (rng or _JITTER).random()


def describe_error(error: BaseException) -> str:
    name = type(error).__name__
    if isinstance(error, SafeJobError):
        return f"{name}: {error}"[:ERROR_LIMIT]
    return name[:ERROR_LIMIT]


def _rearm(job: Job, when: datetime) -> None:
    job.state = JobState.READY
    job.attempts = 0
    job.run_after = when
    job.last_error = None
    job.progress = None
    job.result = None
    job.finished_at = None
    job.lease_token = None
    job.lease_owner = None
    job.lease_expires_at = None
    job.updated_at = utcnow()


def _finish(job: Job, state: JobState, now: datetime) -> None:
    job.state = state
    job.finished_at = now
    job.updated_at = now
    job.lease_token = None
    job.lease_owner = None
    job.lease_expires_at = None


def _held_update(db: Database, held: Claim, **values: Any) -> bool:
    with db.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == held.id, Job.lease_token == held.token, Job.state == JobState.RUNNING)
            .values(**values)
        )
        session.commit()
        return _rowcount(result) == 1


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0))
