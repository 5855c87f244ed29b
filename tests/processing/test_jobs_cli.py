"""``medvault jobs …``, ``medvault reconcile`` and ``medvault scan --all`` on both backends."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.documents.ingest import storage_key_for
from medvault.documents.integrity import Outcome, check_version
from medvault.documents.models import ScanState
from medvault.jobs import build_worker
from medvault.kit.clock import utcnow
from medvault.processing import kinds, queue
from medvault.processing import reconcile as reconcile_module
from medvault.processing.models import Job, JobState
from medvault.processing.worker import JobContext, JobKind, JobRegistry, Worker
from medvault.runtime import Runtime, build_runtime
from tests.processing.jobs_support import (
    drain,
    enqueue,
    first_version,
    make_due,
    run_cli,
    stored_job,
)
from tests.support.backends import SettingsFactory
from tests.support.clamd import EICAR, ClamdServer
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """``--json`` promises one object per line, for ``jq`` and line-based tools."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_a_failing_job_retries_into_dead_and_jobs_retry_revives_it(runtime: Runtime) -> None:
    healthy = {"now": False}

    def flaky(job: JobContext) -> dict[str, str]:
        if not healthy["now"]:
            raise queue.SafeJobError(f"version {job.payload['v']} unreachable")
        return {"outcome": "ok"}

    registry = JobRegistry()
    registry.register(JobKind("flaky", flaky))
    worker = Worker(runtime.clinical, registry)
    job_id = enqueue(runtime, "flaky", {"v": "v-1"}, max_attempts=3)
    seen = []
    for _ in range(3):
        assert worker.run_one()
        job = stored_job(runtime, job_id)
        seen.append((job.state, job.attempts))
        if job.state == JobState.READY:
            # Backed off into the future: not due until its run_after.
            assert job.run_after > utcnow() and not worker.run_one()
            make_due(runtime, job_id)
    assert seen == [("ready", 1), ("ready", 2), ("dead", 3)]
    assert not worker.run_one()  # dead jobs are never claimed

    settings = runtime.settings
    dead = json_lines(run_cli(settings, "jobs", "list", "--state", "dead", "--json").stdout)
    assert [(row["id"], row["kind"], row["attempts"]) for row in dead] == [
        (str(job_id), "flaky", 3)
    ]
    assert dead[0]["last_error"] == "SafeJobError: version v-1 unreachable"
    shown = run_cli(settings, "jobs", "show", str(job_id))
    assert shown.exit_code == 0
    assert json.loads(shown.stdout) == dead[0]
    table = run_cli(settings, "jobs", "list")
    assert str(job_id) in table.stdout and "3/3" in table.stdout

    revived = run_cli(settings, "jobs", "retry", str(job_id))
    assert revived.exit_code == 0 and "will run again" in revived.stderr
    job = stored_job(runtime, job_id)
    assert (job.state, job.attempts, job.last_error) == (JobState.READY, 0, None)
    healthy["now"] = True
    assert worker.run_one()
    done = stored_job(runtime, job_id)
    assert (done.state, done.attempts, json.loads(done.result or "{}")) == (
        "done",
        1,
        {"outcome": "ok"},
    )


def test_jobs_cancel_and_what_the_commands_refuse(runtime: Runtime) -> None:
    settings = runtime.settings
    waiting = enqueue(runtime, "later", {}, delay=timedelta(hours=1))
    running = enqueue(runtime, "busy", {})
    held = queue.claim(runtime.clinical, owner="w", kinds=["busy"], lease=timedelta(minutes=5))
    assert held is not None and held.id == running

    assert run_cli(settings, "jobs", "cancel", str(waiting)).exit_code == 0
    assert stored_job(runtime, waiting).state == JobState.CANCELLED
    again = run_cli(settings, "jobs", "cancel", str(waiting))
    assert again.exit_code == 1 and "already finished" in again.stderr
    busy = run_cli(settings, "jobs", "retry", str(running))
    assert busy.exit_code == 1 and "is running" in busy.stderr
    assert stored_job(runtime, running).attempts == 1  # untouched
    # A cancelled job can be asked to run after all.
    assert run_cli(settings, "jobs", "retry", str(waiting)).exit_code == 0
    assert stored_job(runtime, waiting).state == JobState.READY

    unknown = str(uuid.uuid4())
    for command in ("show", "retry", "cancel"):
        missing = run_cli(settings, "jobs", command, unknown)
        assert missing.exit_code == 1 and "No job" in missing.stderr, command
        assert run_cli(settings, "jobs", command, "not-an-id").exit_code == 2, command
    assert run_cli(settings, "jobs", "list", "--state", "stuck").exit_code == 2


def test_jobs_list_filters_and_limits(runtime: Runtime) -> None:
    settings = runtime.settings
    ids = [enqueue(runtime, "alpha", {"n": n}) for n in range(3)]
    beta = enqueue(runtime, "beta", {"n": 9})
    with runtime.clinical.session() as session:
        assert queue.cancel(session, ids[0]) is not None
        session.commit()

    def listed(*options: str) -> list[str]:
        result = run_cli(settings, "jobs", "list", "--json", *options)
        assert result.exit_code == 0, result.output
        return [row["id"] for row in json_lines(result.stdout)]

    assert sorted(listed()) == sorted(str(i) for i in [*ids, beta])
    assert sorted(listed("--kind", "alpha")) == sorted(str(i) for i in ids)
    assert listed("--kind", "alpha", "--state", "cancelled") == [str(ids[0])]
    assert listed("--state", "ready", "--kind", "beta") == [str(beta)]
    assert len(listed("--limit", "2")) == 2
    # Newest change first: the cancellation is the most recent.
    assert listed("--limit", "1") == [str(ids[0])]


@pytest.fixture
def two_days_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reconciler's clock, two days on: every blob is past the default one-day grace.

    A blob's age comes from the store (file mtime, S3 LastModified), which a test cannot
    set on S3; moving the reconciler's "now" ages them all the same way on both backends.
    """
    later = utcnow() + timedelta(days=2)
    monkeypatch.setattr(reconcile_module, "utcnow", lambda: later)


def _orphan(runtime: Runtime) -> str:
    """A blob no version row points to: what a crash between blob and row leaves."""
    key = storage_key_for(uuid.uuid4())
    writer = runtime.blobs.writer(key)
    writer.write(b"left by a crash between blob and row")
    writer.commit()
    return key


def test_reconcile_leaves_young_orphans_alone(runtime: Runtime, client: TestClient) -> None:
    orphan = _orphan(runtime)
    result = run_cli(runtime.settings, "reconcile")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["orphan_blobs"], summary["young_orphans"]) == (0, 1)
    assert runtime.blobs.exists(orphan)
    refused = run_cli(runtime.settings, "reconcile", "--grace-seconds", "10")
    assert refused.exit_code == 2  # below the minimum grace: would race live uploads


@pytest.mark.usefixtures("two_days_later")
def test_reconcile_dry_run_reports_and_the_real_run_removes_old_orphans(
    runtime: Runtime, client: TestClient
) -> None:
    kept = upload_raw(client, create_patient(client), pdf_bytes(30_000)).json()["id"]
    orphan = _orphan(runtime)

    dry = run_cli(runtime.settings, "reconcile", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) | {"orphan_bytes": 0} == {
        "dry_run": True,
        "orphan_blobs": 1,
        "orphan_bytes": 0,
        "incomplete_writes": 0,
        "young_orphans": 0,
        "expired_uploads": 0,
        "finished_uploads": 0,
    }
    assert "nothing removed" in dry.stderr
    assert runtime.blobs.exists(orphan)
    assert audit_events(runtime, "storage.reconcile") == []

    real = run_cli(runtime.settings, "reconcile")
    assert real.exit_code == 0, real.output
    assert json.loads(real.stdout)["orphan_blobs"] == 1
    assert not runtime.blobs.exists(orphan)
    version = first_version(runtime, kept)
    assert check_version(runtime=runtime, version=version).outcome is Outcome.OK
    events = audit_events(runtime, "storage.reconcile")
    assert [(e.actor_id, e.details["orphan_blobs"]) for e in events] == [("system:cli", 1)]


@pytest.fixture
def scanning(
    make_settings: SettingsFactory, clamd: ClamdServer, runtime: Runtime
) -> Iterator[Runtime]:
    """The test's vault with a scanner configured (after ``runtime`` migrated and emptied it)."""
    scanning_runtime = build_runtime(make_settings(clamd_url=clamd.address))
    yield scanning_runtime
    scanning_runtime.close()


def test_scan_all_queues_every_version_once_and_workers_scan_them(
    runtime: Runtime, client: TestClient, scanning: Runtime
) -> None:
    # Stored while no scanner was configured: they start out not scanned.
    patient = create_patient(client)
    clean = upload_raw(client, patient, pdf_bytes(40_000)).json()["id"]
    infected = upload_raw(client, patient, b"%PDF-1.7\n" + EICAR + b"\n%%EOF\n").json()["id"]
    assert first_version(runtime, clean).scan_state == ScanState.NOT_SCANNED
    refused = run_cli(runtime.settings, "scan", "--all")
    assert refused.exit_code == 2 and "MEDVAULT_CLAMD_URL" in refused.stderr
    assert run_cli(scanning.settings, "scan").exit_code == 2

    for _ in range(2):  # twice: the dedupe key keeps one job per version
        queued = run_cli(scanning.settings, "scan", "--all")
        assert queued.exit_code == 0 and "Queued 2 scans" in queued.stderr
    with runtime.clinical.read_session() as session:
        keys = session.scalars(select(Job.dedupe_key).where(Job.kind == kinds.SCAN)).all()
    versions = {d: first_version(runtime, d) for d in (clean, infected)}
    assert sorted(str(k) for k in keys) == sorted(kinds.scan_key(v.id) for v in versions.values())
    assert {v.scan_state for v in versions.values()} == {ScanState.PENDING}

    worker = build_worker(scanning)
    assert kinds.SCAN in worker.kinds
    drain(worker)
    assert first_version(runtime, clean).scan_state == ScanState.CLEAN
    assert first_version(runtime, infected).scan_state == ScanState.INFECTED
    events = audit_events(runtime, "document.version.quarantined")
    assert [e.resource_id for e in events] == [str(versions[infected].id)]
