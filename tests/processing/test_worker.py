"""The worker loop: handlers, heartbeats, failures and cooperative shutdown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from medvault.processing import queue
from medvault.processing.models import Job, JobState
from medvault.processing.worker import JobContext, JobInterrupted, JobKind, JobRegistry, Worker
from medvault.runtime import Runtime


def _enqueue(runtime: Runtime, kind: str, payload: Mapping[str, Any], **kw: Any) -> Job:
    with runtime.clinical.session() as session:
        job = queue.enqueue(session, kind, payload, **kw)
        session.commit()
        return job


def _stored(runtime: Runtime, job: Job) -> Job:
    with runtime.clinical.session() as session:
        found = session.get(Job, job.id)
        assert found is not None
        return found


def test_a_handler_result_is_stored_and_observed(runtime: Runtime) -> None:
    seen: list[tuple[str, str]] = []
    registry = JobRegistry()
    registry.register(JobKind("double", lambda ctx: {"answer": 2 * int(ctx.payload["n"])}))
    worker = Worker(runtime.clinical, registry, observe=lambda k, o, _s: seen.append((k, o)))
    job = _enqueue(runtime, "double", {"n": 21})
    assert worker.run_one() is True
    assert worker.run_one() is False
    stored = _stored(runtime, job)
    assert (stored.state, json.loads(stored.result or "{}")) == ("done", {"answer": 42})
    assert seen == [("double", "done")]


def test_a_failing_handler_is_retried_later_with_its_error_recorded(runtime: Runtime) -> None:
    def broken(_ctx: JobContext) -> None:
        raise OSError("disk full writing /tmp/Jane Smith.pdf")

    registry = JobRegistry()
    registry.register(JobKind("broken", broken))
    job = _enqueue(runtime, "broken", {}, max_attempts=2)
    Worker(runtime.clinical, registry).run_one()
    stored = _stored(runtime, job)
    assert (stored.state, stored.attempts, stored.last_error) == ("ready", 1, "OSError")


def test_the_heartbeat_keeps_a_long_job_from_being_taken(runtime: Runtime) -> None:
    other_claims: list[object] = []

    def slow(ctx: JobContext) -> None:
        for _ in range(8):
            time.sleep(0.15)
            other_claims.append(
                queue.claim(runtime.clinical, owner="thief", kinds=["slow"], lease=timedelta(1))
            )
        ctx.progress(step=8)

    registry = JobRegistry()
    registry.register(JobKind("slow", slow, lease=timedelta(seconds=0.3)))
    job = _enqueue(runtime, "slow", {})
    Worker(runtime.clinical, registry).run_one()
    assert other_claims == [None] * 8
    stored = _stored(runtime, job)
    assert (stored.state, stored.attempts, json.loads(stored.progress or "{}")) == (
        "done",
        1,
        {"step": 8},
    )


def test_stopping_releases_the_current_job_without_spending_an_attempt(
    runtime: Runtime,
) -> None:
    started = threading.Event()

    def patient(ctx: JobContext) -> None:
        started.set()
        while not ctx.stopping:
            time.sleep(0.01)
        raise JobInterrupted

    registry = JobRegistry()
    registry.register(JobKind("patient", patient))
    worker = Worker(runtime.clinical, registry, poll_interval=0.05)
    job = _enqueue(runtime, "patient", {})
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(10)
    worker.stop_event.set()
    thread.join(10)
    assert not thread.is_alive()
    stored = _stored(runtime, job)
    assert (stored.state, stored.attempts, stored.lease_owner) == (JobState.READY, 0, None)


def test_a_kind_registered_twice_is_refused() -> None:
    registry = JobRegistry()
    registry.register(JobKind("scan", lambda ctx: None))
    with pytest.raises(ValueError, match="scan"):
        registry.register(JobKind("scan", lambda ctx: None))


def test_drain_runs_every_due_job_and_leaves_no_beat_behind(runtime: Runtime) -> None:
    from sqlalchemy import func, select

    from medvault.processing.models import WorkerBeat

    registry = JobRegistry()
    registry.register(JobKind("noop", lambda ctx: None))
    for n in range(3):
        _enqueue(runtime, "noop", {"n": n})
    worker = Worker(runtime.clinical, registry)
    assert worker.drain() == 3
    with runtime.clinical.session() as session:
        # A worker that has exited must not count as alive for /readyz.
        assert session.scalar(select(func.count()).select_from(WorkerBeat)) == 0
        states = session.scalars(select(Job.state)).all()
    assert sorted(states) == [JobState.DONE] * 3
