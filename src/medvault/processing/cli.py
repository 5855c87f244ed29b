"""Operator commands for background work: ``worker``, ``jobs``, ``scan`` and ``reconcile``.

They open the vault's databases and blob store directly, so they run where its
configuration is. ``medvault worker`` is what production runs beside the web
instances (any number of them, on any number of hosts).
"""

from __future__ import annotations

import json
import signal
import uuid
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from medvault.cli.console import (
    err,
    fail,
    id_argument,
    operational_errors,
    out,
    server_runtime,
    table_console,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from medvault.processing.models import Job

jobs_app = typer.Typer(no_args_is_help=True, help="Background jobs: list, inspect, retry, cancel.")


def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Run until no job is due, then exit (for cron or tests)")
    ] = False,
) -> None:
    """Run a job worker until SIGTERM or Ctrl-C; run one per core, on as many hosts as needed."""
    import logging

    from medvault.jobs import build_worker
    from medvault.kit.allocator import keep_buffers_mapped

    keep_buffers_mapped()  # scans and derivations stream whole documents too
    runtime = server_runtime(run_migrations=True)
    logging.basicConfig(
        level=runtime.settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    job_worker = build_worker(runtime)

    def stop(signum: int, frame: FrameType | None) -> None:
        # Finish or release the current job, then exit (see processing.worker).
        err.print("stopping: finishing the current job…")
        job_worker.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    kinds = ", ".join(sorted(job_worker.kinds))
    err.print(f"medvault worker {escape(job_worker.owner)} running: {escape(kinds)}")
    with operational_errors():
        if once:
            job_worker.drain()
        else:
            job_worker.run()
    runtime.close()


def _row(job: Job) -> dict[str, object]:
    return {
        "id": str(job.id),
        "kind": job.kind,
        "state": job.state,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "run_after": job.run_after.isoformat(),
        "lease_owner": job.lease_owner,
        "lease_expires_at": job.lease_expires_at.isoformat() if job.lease_expires_at else None,
        "last_error": job.last_error,
        "payload": json.loads(job.payload),
        "progress": json.loads(job.progress) if job.progress else None,
        "result": json.loads(job.result) if job.result else None,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


@jobs_app.command("list")
def list_jobs(
    state: Annotated[
        str | None, typer.Option(help="ready, running, done, dead or cancelled")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind (scan, reconcile, …)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """The most recently changed jobs, newest first."""
    from sqlalchemy import select

    from medvault.processing.models import Job, JobState

    if state is not None and state not in {s.value for s in JobState}:
        fail(f"Unknown state {state!r}; use one of {', '.join(s.value for s in JobState)}.", 2)
    runtime = server_runtime()
    with operational_errors(), runtime.clinical.read_session() as session:
        query = select(Job).order_by(Job.updated_at.desc(), Job.id).limit(limit)
        if state is not None:
            query = query.where(Job.state == state)
        if kind is not None:
            query = query.where(Job.kind == kind)
        jobs = list(session.scalars(query))
    if as_json:
        for job in jobs:
            # One compact object per line (print_json would indent it over many lines).
            typer.echo(json.dumps(_row(job)))
        return
    table = Table("id", "kind", "state", "attempts", "run after", "last error")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.kind,
            job.state,
            f"{job.attempts}/{job.max_attempts}",
            job.run_after.strftime("%Y-%m-%d %H:%M:%S"),
            escape(job.last_error or ""),
        )
    table_console().print(table)


@jobs_app.command("show")
def show_job(job_id: str) -> None:
    """Everything about one job, as JSON."""
    from medvault.processing.models import Job

    wanted = id_argument(job_id, kind="job")
    runtime = server_runtime()
    with operational_errors(), runtime.clinical.read_session() as session:
        job = session.get(Job, wanted)
        if job is None:
            fail("No job with this id.")
        out.print_json(json.dumps(_row(job)))


@jobs_app.command("retry")
def retry_job(job_id: str) -> None:
    """Run a dead, cancelled or waiting job again, from its first attempt."""
    from medvault.processing import queue

    _operate(job_id, queue.retry, "will run again", "is running; cancel it first")


@jobs_app.command("cancel")
def cancel_job(job_id: str) -> None:
    """Stop a waiting job from running (a running one is not finished by its worker)."""
    from medvault.processing import queue

    _operate(job_id, queue.cancel, "is cancelled", "has already finished")


def _operate(
    job_id: str, operate: Callable[[Session, uuid.UUID], Job | None], done: str, refused: str
) -> None:
    from medvault.processing.models import Job

    wanted = id_argument(job_id, kind="job")
    runtime = server_runtime()
    with operational_errors(), runtime.clinical.session() as session:
        exists = session.get(Job, wanted) is not None
        if not exists:
            fail("No job with this id.")
        if operate(session, wanted) is None:
            fail(f"Job {wanted} {refused}.")
        session.commit()
    err.print(f"Job {wanted} {done}.")


def scan(
    scan_all: Annotated[
        bool, typer.Option("--all", help="Every stored version, e.g. after a signature update")
    ] = False,
) -> None:
    """Queue malware scans; running workers with a scanner pick them up."""
    from sqlalchemy import select

    from medvault.documents.arrival import queue_scan
    from medvault.documents.models import DocumentVersion, VersionState

    if not scan_all:
        fail("Say what to scan: --all.", code=2)
    runtime = server_runtime(run_migrations=True)
    if runtime.settings.clamd_url is None:
        fail("MEDVAULT_CLAMD_URL is not set: there is no scanner to scan with.", code=2)
    queued = 0
    with operational_errors():
        after: uuid.UUID | None = None
        while True:
            with runtime.clinical.session() as session:
                query = (
                    select(DocumentVersion)
                    .where(DocumentVersion.state != VersionState.DESTROYED)
                    .order_by(DocumentVersion.id)
                    .limit(500)
                )
                if after is not None:
                    query = query.where(DocumentVersion.id > after)
                batch = list(session.scalars(query))
                for version in batch:
                    after = version.id
                    queue_scan(session, version)
                session.commit()
            queued += len(batch)
            if len(batch) < 500:
                break
    err.print(f"Queued {queued} scans.")


def reconcile(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, remove nothing")] = False,
    grace_seconds: Annotated[
        int | None,
        typer.Option(min=60, help="Only leftovers older than this (default: the setting)"),
    ] = None,
) -> None:
    """Remove orphan blobs and unfinished writes now, as the periodic job does."""
    from medvault.processing.reconcile import reconcile as run_reconcile
    from medvault.processing.reconcile import record_report

    runtime = server_runtime(run_migrations=True)
    grace = grace_seconds or runtime.settings.reconcile_grace_seconds
    with operational_errors():
        report = run_reconcile(runtime, grace_seconds=grace, dry_run=dry_run)
        record_report(runtime, report, actor="cli")
    out.print_json(json.dumps(report.summary()))
    if dry_run:
        err.print(f"Dry run: nothing removed (grace {timedelta(seconds=grace)}).")
