"""Helpers for the job tests: enqueue and read jobs, drain a worker, run worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import update
from typer.testing import CliRunner, Result

from medvault.cli.app import app as cli
from medvault.config import Settings
from medvault.documents import repository
from medvault.documents.models import DocumentVersion
from medvault.kit.clock import utcnow
from medvault.processing import queue
from medvault.processing.models import Job
from medvault.processing.worker import Worker
from medvault.runtime import Runtime
from tests.cli.server_env import server_env
from tests.support.services import free_port
from tests.support.vault_process import vault_environment

WORKER_SCRIPT = Path(__file__).with_name("worker_process.py")
# The test-only kind that worker_process.py registers.
TEST_KIND = "test-slow"
T = TypeVar("T")


def enqueue(runtime: Runtime, kind: str, payload: Mapping[str, Any], **options: Any) -> uuid.UUID:
    with runtime.clinical.session() as session:
        job = queue.enqueue(session, kind, payload, **options)
        session.commit()
        return job.id


def stored_job(runtime: Runtime, job_id: uuid.UUID) -> Job:
    with runtime.clinical.session() as session:
        job = session.get(Job, job_id)
        assert job is not None, f"no job {job_id}"
        return job


def job_result(runtime: Runtime, job_id: uuid.UUID) -> dict[str, Any]:
    raw = stored_job(runtime, job_id).result
    assert raw is not None, f"job {job_id} has no result"
    result: dict[str, Any] = json.loads(raw)
    return result


def make_due(runtime: Runtime, job_id: uuid.UUID, *, ago: timedelta = timedelta(seconds=1)) -> None:
    """Skip a backoff (or age a due job) without sleeping through it."""
    with runtime.clinical.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(run_after=utcnow() - ago))
        session.commit()


def drain(worker: Worker, limit: int = 200) -> int:
    """Run due jobs until none is left; returns how many ran."""
    for ran in range(limit):
        if not worker.run_one():
            return ran
    raise AssertionError(f"still jobs due after {limit} runs")


def first_version(runtime: Runtime, document_id: str | uuid.UUID) -> DocumentVersion:
    with runtime.clinical.read_session() as session:
        version = repository.version(session, uuid.UUID(str(document_id)), 1)
    assert version is not None
    return version


def run_cli(settings: Settings, *args: str) -> Result:
    """``medvault <args>`` in this process, configured like ``settings`` (as operators do)."""
    # pytest-xdist sets COLUMNS=80 in its workers; tables as a script would see them.
    env = {**server_env(settings), "COLUMNS": "200"}
    result = CliRunner().invoke(cli, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    return result


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker subprocess that opens the same databases and blobs."""
    env = vault_environment(settings.resolved_data_dir, free_port(), server_env(settings))
    env.update(extra)
    return env


def start_process(
    argv: list[str], env: Mapping[str, str], log: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """A child in its own session, so a SIGKILL aimed at it never reaches pytest."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, *argv],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )


def slow_worker_argv(log: Path, *, hold: float, lease: float, once: bool = False) -> list[str]:
    """Arguments for worker_process.py: its kind holds each job ``hold`` seconds."""
    argv = [str(WORKER_SCRIPT), str(log), str(hold), str(lease)]
    return [*argv, "--once"] if once else argv


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")
