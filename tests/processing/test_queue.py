"""The job queue on both backends: outbox enqueue, leases, retries, dead jobs."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import IntegrityError

from medvault.kit.clock import utcnow
from medvault.processing import queue
from medvault.processing.models import Job, JobState
from medvault.runtime import Runtime

LEASE = timedelta(seconds=30)


def _job(runtime: Runtime, job_id: object) -> Job:
    with runtime.clinical.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _make_due(runtime: Runtime, job_id: object) -> None:
    """Skip a backoff or a lease without sleeping through it."""
    past = utcnow() - timedelta(seconds=1)
    with runtime.clinical.session() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(run_after=past, lease_expires_at=past)
        )
        session.commit()


def test_a_job_exists_only_if_its_transaction_commits(runtime: Runtime) -> None:
    with runtime.clinical.session() as session:
        queue.enqueue(session, "scan", {"version": "a"})
        session.rollback()
    with runtime.clinical.session() as session:
        kept = queue.enqueue(session, "scan", {"version": "b"})
        session.commit()
    with runtime.clinical.session() as session:
        payloads = session.scalars(select(Job.payload)).all()
    assert payloads == ['{"version": "b"}']
    assert _job(runtime, kept.id).state == JobState.READY


def test_a_dedupe_key_keeps_one_live_job_and_rearms_a_finished_one(runtime: Runtime) -> None:
    with runtime.clinical.session() as session:
        first = queue.enqueue(session, "scan", {"v": 1}, dedupe_key="scan:v1")
        again = queue.enqueue(session, "scan", {"v": 1}, dedupe_key="scan:v1")
        session.commit()
    assert first.id == again.id
    held = queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE)
    assert held is not None and queue.complete(runtime.clinical, held, {"verdict": "clean"})
    assert _job(runtime, first.id).state == JobState.DONE
    with runtime.clinical.session() as session:
        rearmed = queue.enqueue(session, "scan", {"v": 1}, dedupe_key="scan:v1")
        session.commit()
    job = _job(runtime, rearmed.id)
    assert (rearmed.id, job.state, job.attempts, job.result) == (first.id, "ready", 0, None)


def test_a_fresh_job_skips_the_lookup_and_its_unique_key_still_guards(runtime: Runtime) -> None:
    # An upload's jobs name a version made in the same transaction: no lookup, and the
    # INSERTs wait for one flush. Wrongly claiming "fresh" cannot make a duplicate.
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(runtime.clinical.engine, "before_cursor_execute", seen)
    try:
        with runtime.clinical.session() as session:
            queue.enqueue(session, "preview", {"v": 1}, dedupe_key="preview:v1", fresh=True)
            queue.enqueue(session, "text", {"v": 1}, dedupe_key="text:v1", fresh=True)
            assert statements == []  # nothing sent yet: no SELECT, no INSERT
            session.commit()
    finally:
        event.remove(runtime.clinical.engine, "before_cursor_execute", seen)
    assert not any(s.lstrip().upper().startswith("SELECT") for s in statements), statements
    with runtime.clinical.read_session() as session:
        keys = session.scalars(select(Job.dedupe_key).order_by(Job.dedupe_key)).all()
        assert list(keys) == ["preview:v1", "text:v1"]
    with runtime.clinical.session() as session:
        queue.enqueue(session, "preview", {"v": 1}, dedupe_key="preview:v1", fresh=True)
        with pytest.raises(IntegrityError):
            session.flush()


def test_claims_take_due_jobs_of_the_asked_kinds_oldest_first(runtime: Runtime) -> None:
    with runtime.clinical.session() as session:
        later = queue.enqueue(session, "scan", {"n": 2}, delay=timedelta(hours=1))
        older = queue.enqueue(session, "scan", {"n": 1})
        queue.enqueue(session, "preview", {"n": 3})
        session.commit()
    held = queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE)
    assert held is not None and held.id == older.id and held.attempt == 1
    assert queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE) is None
    assert _job(runtime, later.id).state == JobState.READY


def test_an_expired_lease_hands_the_job_to_another_worker(runtime: Runtime) -> None:
    with runtime.clinical.session() as session:
        job = queue.enqueue(session, "scan", {})
        session.commit()
    first = queue.claim(runtime.clinical, owner="dead-worker", kinds=["scan"], lease=LEASE)
    assert first is not None
    assert queue.claim(runtime.clinical, owner="w2", kinds=["scan"], lease=LEASE) is None
    _make_due(runtime, job.id)
    second = queue.claim(runtime.clinical, owner="w2", kinds=["scan"], lease=LEASE)
    assert second is not None and second.id == job.id and second.attempt == 2
    # The first worker wakes up late: it can neither finish nor extend the job.
    assert not queue.complete(runtime.clinical, first)
    assert not queue.heartbeat(runtime.clinical, first, lease=LEASE)
    assert queue.complete(runtime.clinical, second)
    stored = _job(runtime, job.id)
    assert (stored.state, stored.attempts) == ("done", 2)


def test_failures_back_off_then_park_the_job_dead_and_retry_revives_it(
    runtime: Runtime,
) -> None:
    with runtime.clinical.session() as session:
        job = queue.enqueue(session, "scan", {}, max_attempts=3)
        session.commit()
    states = []
    for _ in range(3):
        held = queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE)
        assert held is not None
        before = utcnow()
        states.append(queue.fail(runtime.clinical, held, ConnectionRefusedError("clamd at x")))
        stored = _job(runtime, job.id)
        if stored.state == JobState.READY:
            assert stored.run_after >= before + queue.BACKOFF_BASE / 2
        _make_due(runtime, job.id)
    assert states == ["ready", "ready", "dead"]
    dead = _job(runtime, job.id)
    # The message could quote a document: only the class name is kept.
    assert dead.last_error == "ConnectionRefusedError"
    assert queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE) is None
    with runtime.clinical.session() as session:
        assert queue.retry(session, job.id) is not None
        session.commit()
    revived = queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE)
    assert revived is not None and revived.attempt == 1


def test_a_safe_error_keeps_its_message(runtime: Runtime) -> None:
    with runtime.clinical.session() as session:
        job = queue.enqueue(session, "scan", {}, max_attempts=1)
        session.commit()
    held = queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE)
    assert held is not None
    queue.fail(runtime.clinical, held, queue.SafeJobError("version 7 has no blob"))
    assert _job(runtime, job.id).last_error == "SafeJobError: version 7 has no blob"


def test_a_job_whose_worker_dies_on_every_attempt_ends_dead(runtime: Runtime) -> None:
    with runtime.clinical.session() as session:
        job = queue.enqueue(session, "scan", {}, max_attempts=2)
        session.commit()
    for _ in range(2):
        assert queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE)
        _make_due(runtime, job.id)
    assert queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE) is None
    stored = _job(runtime, job.id)
    assert stored.state == JobState.DEAD and "WorkerLost" in (stored.last_error or "")


def test_release_gives_the_attempt_back(runtime: Runtime) -> None:
    with runtime.clinical.session() as session:
        job = queue.enqueue(session, "scan", {})
        session.commit()
    held = queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE)
    assert held is not None and queue.release(runtime.clinical, held)
    stored = _job(runtime, job.id)
    assert (stored.state, stored.attempts, stored.lease_token) == ("ready", 0, None)


def test_cancel_stops_a_waiting_job_and_a_running_one_cannot_finish(runtime: Runtime) -> None:
    with runtime.clinical.session() as session:
        waiting = queue.enqueue(session, "scan", {"n": 1}, delay=timedelta(minutes=5))
        running = queue.enqueue(session, "scan", {"n": 2})
        session.commit()
    held = queue.claim(runtime.clinical, owner="w", kinds=["scan"], lease=LEASE)
    assert held is not None and held.id == running.id
    with runtime.clinical.session() as session:
        assert queue.cancel(session, waiting.id) is not None
        assert queue.cancel(session, running.id) is not None
        session.commit()
    assert not queue.complete(runtime.clinical, held)
    assert {_job(runtime, waiting.id).state, _job(runtime, running.id).state} == {"cancelled"}


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    delays = [queue.backoff(attempt, rng=rng) for attempt in range(1, 16)]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(queue.BACKOFF_CAP, queue.BACKOFF_BASE * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert delays[-1] > delays[0] * 100
    assert len({round(d.total_seconds(), 6) for d in delays[:5]}) == 5


def test_concurrent_workers_never_run_a_job_twice(runtime: Runtime) -> None:
    total = 120
    with runtime.clinical.session() as session:
        for n in range(total):
            queue.enqueue(session, "count", {"n": n})
        session.commit()
    runs: Counter[str] = Counter()
    active: set[str] = set()
    overlaps: list[str] = []
    guard = threading.Lock()

    def work(owner: str) -> None:
        while held := queue.claim(runtime.clinical, owner=owner, kinds=["count"], lease=LEASE):
            key = str(held.id)
            with guard:
                if key in active:
                    overlaps.append(key)
                active.add(key)
                runs[key] += 1
            time.sleep(0.001)
            with guard:
                active.discard(key)
            assert queue.complete(runtime.clinical, held)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert len(runs) == total and set(runs.values()) == {1}
    with runtime.clinical.session() as session:
        done = session.scalar(select(func.count()).where(Job.state == JobState.DONE))
    assert done == total


@pytest.mark.parametrize("attempt", [1, 5])
def test_describe_error_never_keeps_a_library_message(attempt: int) -> None:
    error = ValueError(f"cannot parse 'Smith, Jane - discharge.pdf' (try {attempt})")
    assert queue.describe_error(error) == "ValueError"


def test_a_periodic_kind_is_armed_once_and_first_runs_one_interval_later(
    runtime: Runtime,
) -> None:
    every = timedelta(hours=1)
    for _ in range(2):  # two workers' housekeeping: still one row
        with runtime.clinical.session() as session:
            queue.ensure_periodic(session, "reconcile", every)
            session.commit()
    with runtime.clinical.session() as session:
        rows = session.scalars(select(Job).where(Job.kind == "reconcile")).all()
    assert len(rows) == 1
    assert rows[0].run_after - utcnow() > every - timedelta(minutes=1)
    assert queue.claim(runtime.clinical, owner="w", kinds=["reconcile"], lease=LEASE) is None
    _make_due(runtime, rows[0].id)
    held = queue.claim(runtime.clinical, owner="w", kinds=["reconcile"], lease=LEASE)
    assert held is not None and queue.complete(runtime.clinical, held)
    finished = _job(runtime, rows[0].id).finished_at
    assert finished is not None
    with runtime.clinical.session() as session:
        queue.ensure_periodic(session, "reconcile", every)
        session.commit()
    # Re-armed from its last run, not from now: the schedule survives restarts.
    again = _job(runtime, rows[0].id)
    assert (again.state, again.run_after) == (JobState.READY, finished + every)


def test_a_claim_takes_the_lease_of_the_claimed_kind(runtime: Runtime) -> None:
    with runtime.clinical.session() as session:
        queue.enqueue(session, "quick", {})
        session.commit()
    leases = {"quick": timedelta(seconds=20), "slow": timedelta(minutes=10)}
    before = utcnow()
    held = queue.claim(
        runtime.clinical, owner="w", kinds=list(leases), lease=leases["slow"], leases=leases
    )
    assert held is not None
    expires = _job(runtime, held.id).lease_expires_at
    assert expires is not None
    # A killed worker's quick job is free again after its own 20 s, not the slow kind's.
    assert expires - before < timedelta(minutes=1)
