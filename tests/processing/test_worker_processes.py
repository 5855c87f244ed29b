"""Worker processes on both backends: SIGKILL mid-job, two workers at once, the real CLI.

The crash and concurrency tests run ``worker_process.py``: the real ``Worker`` in its
own process, on the test's databases and blob store, with one test-only kind whose
handler logs exactly when it starts and when it completes. The others run
``medvault worker`` itself.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.processing import kinds
from medvault.processing.models import Job, JobState, WorkerBeat
from medvault.runtime import Runtime
from tests.processing.jobs_support import (
    TEST_KIND,
    enqueue,
    first_version,
    process_env,
    slow_worker_argv,
    start_process,
    stored_job,
    wait_for,
)
from tests.support.factories import create_patient, pdf_bytes, upload_raw

LEASE_SECONDS = 2.0  # short, so a killed worker's job is free again within seconds


@dataclass(frozen=True)
class Run:
    event: str  # "start" or "done"
    job_id: uuid.UUID
    attempt: int
    owner: str
    at_ns: int


def runs(log: Path) -> list[Run]:
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        event, job_id, attempt, owner, at_ns = line.split()
        found.append(Run(event, uuid.UUID(job_id), int(attempt), owner, int(at_ns)))
    return found


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the worker finishes or releases its job), SIGKILL only if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def test_a_killed_worker_s_job_waits_out_its_lease_then_completes_once(
    runtime: Runtime, tmp_path: Path
) -> None:
    log, env = tmp_path / "runs.log", process_env(runtime.settings)
    job_id = enqueue(runtime, TEST_KIND, {"n": 1})
    first_out = tmp_path / "first.out"
    # Holds the job far longer than the test runs: only the SIGKILL ends it.
    first = start_process(
        slow_worker_argv(log, hold=600, lease=LEASE_SECONDS), env, first_out, tmp_path
    )
    try:
        started = wait_for("the first worker to start the job", lambda: runs(log), process=first)
        owner_a = started[0].owner
        held = stored_job(runtime, job_id)
        assert (held.state, held.lease_owner, held.attempts) == (JobState.RUNNING, owner_a, 1)
        initial_expiry = held.lease_expires_at
        assert initial_expiry is not None

        def extended() -> bool:
            expiry = stored_job(runtime, job_id).lease_expires_at
            return expiry is not None and expiry > initial_expiry

        # Its heartbeat keeps the lease alive while the handler blocks.
        wait_for("a heartbeat to extend the lease", extended, process=first, log=first_out)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(15)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(15)
    orphaned = stored_job(runtime, job_id)
    assert (orphaned.state, orphaned.lease_owner) == (JobState.RUNNING, owner_a)
    dead_lease = orphaned.lease_expires_at
    assert dead_lease is not None

    second_out = tmp_path / "second.out"
    second = start_process(
        slow_worker_argv(log, hold=0, lease=LEASE_SECONDS), env, second_out, tmp_path
    )
    try:
        wait_for(
            "the second worker to complete the job",
            lambda: stored_job(runtime, job_id).state == JobState.DONE,
            process=second,
            log=second_out,
        )
    finally:
        assert stop(second) == 0, second_out.read_text()
    done = stored_job(runtime, job_id)
    owner_b = json.loads(done.result or "{}")["owner"]
    assert owner_b != owner_a
    assert (done.attempts, done.lease_token, done.lease_owner) == (2, None, None)
    # Taken only once the dead worker's lease had run out, not while it might still live.
    assert done.started_at is not None and done.started_at >= dead_lease
    logged = runs(log)
    assert [(r.event, r.attempt, r.owner) for r in logged] == [
        ("start", 1, owner_a),
        ("start", 2, owner_b),
        ("done", 2, owner_b),
    ]
    assert {r.job_id for r in logged} == {job_id}


def test_two_worker_processes_share_the_jobs_and_never_run_one_twice(
    runtime: Runtime, tmp_path: Path
) -> None:
    total, log, env = 40, tmp_path / "runs.log", process_env(runtime.settings)
    job_ids = {enqueue(runtime, TEST_KIND, {"n": n, "rendezvous": True}) for n in range(total)}
    outs = [tmp_path / f"worker-{n}.out" for n in range(2)]
    workers = [
        start_process(slow_worker_argv(log, hold=0.02, lease=30, once=True), env, out, tmp_path)
        for out in outs
    ]
    try:
        codes = [worker.wait(180) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    assert codes == [0, 0], [out.read_text()[-2000:] for out in outs]

    by_job: dict[uuid.UUID, list[Run]] = defaultdict(list)
    for run in runs(log):
        by_job[run.job_id].append(run)
    assert set(by_job) == job_ids
    for job_id, events in by_job.items():
        intervals = []
        for start, end in zip(events[0::2], events[1::2], strict=True):
            assert (start.event, end.event, start.owner) == ("start", "done", end.owner), events
            intervals.append((start.at_ns, end.at_ns))
        intervals.sort()
        overlapping = [a for a, b in itertools.pairwise(intervals) if b[0] < a[1]]
        assert not overlapping, f"job {job_id} ran twice at once: {events}"
        assert len(intervals) == 1, f"job {job_id} ran {len(intervals)} times"
    # The rendezvous makes each worker's first job wait for the other: both took part.
    assert len({run.owner for run in runs(log)}) == 2
    with runtime.clinical.read_session() as session:
        rows = session.execute(select(Job.state, Job.attempts).where(Job.kind == TEST_KIND)).all()
    assert sorted(rows) == [(JobState.DONE, 1)] * total


def test_medvault_worker_runs_jobs_reports_in_and_stops_on_sigterm(
    runtime: Runtime, client: TestClient, tmp_path: Path
) -> None:
    content = pdf_bytes(50_000)
    document = upload_raw(client, create_patient(client), content).json()
    version = first_version(runtime, document["id"])
    out = tmp_path / "worker.out"
    env = process_env(runtime.settings, MEDVAULT_WORKER_POLL_SECONDS="0.1")
    worker = start_process(["-m", "medvault.cli", "worker"], env, out, tmp_path)
    try:

        def hashed() -> bool:
            return first_version(runtime, document["id"]).sha1 is not None

        wait_for("the fhir-sha1 job", hashed, process=worker, log=out)

        def beat() -> list[str]:
            with runtime.clinical.read_session() as session:
                owners = session.scalars(select(WorkerBeat.owner)).all()
            return [o for o in owners if o.startswith(f"{socket.gethostname()}:{worker.pid}:")]

        wait_for("the worker's beat", beat, process=worker, log=out)
    finally:
        code = stop(worker)
    assert code == 0, out.read_text()
    assert (
        first_version(runtime, document["id"]).sha1
        == hashlib.sha1(content, usedforsecurity=False).hexdigest()
    )
    assert beat() == []  # a worker that stops cleanly is no longer counted alive
    with runtime.clinical.read_session() as session:
        job = session.scalars(select(Job).where(Job.dedupe_key == kinds.sha1_key(version.id))).one()
    assert (job.state, job.attempts) == (JobState.DONE, 1)


def test_medvault_worker_once_drains_due_jobs_and_exits_0(
    runtime: Runtime, client: TestClient, tmp_path: Path
) -> None:
    patient = create_patient(client)
    documents = [upload_raw(client, patient, pdf_bytes(20_000)).json()["id"] for _ in range(3)]
    later = enqueue(
        runtime, kinds.FHIR_SHA1, {"version_id": str(uuid.uuid4())}, delay=timedelta(hours=1)
    )
    unknown = enqueue(runtime, "no-worker-runs-this", {})
    done = subprocess.run(
        [sys.executable, "-m", "medvault.cli", "worker", "--once"],
        env=process_env(runtime.settings),
        cwd=tmp_path,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    assert all(first_version(runtime, d).sha1 is not None for d in documents)
    with runtime.clinical.read_session() as session:
        others = session.execute(select(Job.kind, Job.state).where(Job.kind != kinds.FHIR_SHA1))
        states = {row.kind: row.state for row in others.all()}
        sha1_states = session.scalars(select(Job.state).where(Job.kind == kinds.FHIR_SHA1)).all()
    # The periodic kinds were armed by this worker, due one interval from now: a fresh
    # vault does not reconcile at its first start (see queue.ensure_periodic).
    assert states == {
        kinds.RECONCILE: JobState.READY,
        kinds.FHIR_DRAFT_EXPIRY: JobState.READY,
        kinds.INTEGRITY_SCRUB: JobState.READY,
        kinds.APPRAISAL: JobState.READY,
        kinds.EXPORT_EXPIRY: JobState.READY,
        kinds.FHIR_BULK_EXPORT_EXPIRY: JobState.READY,
        "no-worker-runs-this": JobState.READY,
        # Every upload's preview and text ran too (each kind's rows are all done).
        kinds.PREVIEW: JobState.DONE,
        kinds.TEXT: JobState.DONE,
    }
    assert sorted(sha1_states) == [JobState.DONE] * 3 + [JobState.READY]
    assert stored_job(runtime, later).state == JobState.READY
    assert stored_job(runtime, unknown).attempts == 0
