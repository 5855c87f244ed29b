"""``medvault storage migrate --to URI``: move the vault's blobs to another store.

Server-side: it opens the vault's configured store (``MEDVAULT_STORAGE_URL``) and the
target with the same settings (S3 endpoint and region, Azure credentials), so it runs
where the vault's configuration is. It needs no keys: blobs are copied encrypted. Mismatches
go to stdout, one per line (``MISMATCH key: reason``), and progress and the summary to
stderr; the exit status is 1 when any blob differs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn

from medvault.cli.console import err, fail, human_size, operational_errors, out
from medvault.config import Settings
from medvault.storage.migration import DEFAULT_PARALLEL, MigrationObserver

if TYPE_CHECKING:
    from medvault.storage.migration import BlobResult

storage_app = typer.Typer(no_args_is_help=True, help="The blob store (server side).")


class _ProgressObserver(MigrationObserver):
    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID = progress.add_task("listing the target")
        self._counts: dict[str, int] = {}

    def listed_target(self, count: int) -> None:
        self._progress.update(self._task, description=f"target holds {count} blobs; copying")

    def blob_done(self, result: BlobResult) -> None:
        self._counts[result.outcome.value] = self._counts.get(result.outcome.value, 0) + 1
        counts = ", ".join(f"{name} {n}" for name, n in sorted(self._counts.items()))
        self._progress.update(self._task, description=counts)


@storage_app.command("migrate")
def migrate(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Target store: file:///path, s3://bucket/prefix or azure://container/prefix",
        ),
    ],
    parallel: Annotated[
        int, typer.Option("--parallel", min=1, max=64, help="Blobs copied at once")
    ] = DEFAULT_PARALLEL,
    verify_existing: Annotated[
        bool,
        typer.Option(
            "--verify-existing/--trust-existing",
            help="Compare the SHA-256 of blobs the target already holds (default), or trust "
            "any of the same size: for a final pass right after a verified run",
        ),
    ] = True,
) -> None:
    """Copy every blob of the vault's store to --to, verify each, and resume where a
    previous run stopped. Run it again after switching MEDVAULT_STORAGE_URL: see the
    README, "Moving to another blob store"."""
    from medvault.runtime import open_configured_store
    from medvault.storage.migration import migrate_blobs

    settings = Settings()
    try:
        source = open_configured_store(settings)
        target = open_configured_store(settings, to)
    except ValueError as exc:
        fail(str(exc), code=2)
    if source.describe() == target.describe():
        fail(f"The target is the vault's own store ({source.describe()}).", code=2)
    err.print(f"Copying {escape(source.describe())} → {escape(target.describe())}", soft_wrap=True)
    started = time.monotonic()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with operational_errors(), progress:
        report = migrate_blobs(
            source=source,
            target=target,
            parallel=parallel,
            verify_existing=verify_existing,
            observer=_ProgressObserver(progress),
        )
    seconds = time.monotonic() - started
    err.print(
        f"{report.copied} copied ({human_size(report.copied_bytes)}), "
        f"{report.present} already there, {report.vanished} deleted at the source meanwhile, "
        f"{len(report.mismatches)} mismatched; {report.target_only} only at the target; "
        f"{seconds:.1f} s",
        soft_wrap=True,
    )
    for mismatch in sorted(report.mismatches, key=lambda result: result.key):
        out.print(
            f"MISMATCH {escape(mismatch.key)}: {escape(mismatch.reason or '')}", soft_wrap=True
        )
    if report.mismatches:
        fail(
            f"{len(report.mismatches)} blob(s) at the target differ from the source; "
            "they were not overwritten (keys are immutable). Delete them at the target "
            "and run again."
        )
