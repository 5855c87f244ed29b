"""``medvault backup [create] DEST``, ``backup keys``, ``backup verify`` and ``medvault restore``.

Server-side commands: they open the vault's databases and blob store directly, so they
run where the vault's configuration is. Results (the new backup's path, verdicts) go
to stdout and progress and summaries to stderr, so ``medvault backup`` fits in cron
and scripts. ``backup`` alone needs no key material; ``restore --verify`` and
``backup verify --restored`` need the restored vault's keyring and audit key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from typer.core import TyperGroup

from medvault.cli.console import (
    err,
    fail,
    human_size,
    open_runtime,
    operational_errors,
    refuse_without_keyring,
)
from medvault.config import Settings
from medvault.governance.backup.blob_copy import DEFAULT_PARALLEL
from medvault.governance.backup.service import Observer

if TYPE_CHECKING:
    from medvault.governance.backup.manifest import Manifest
    from medvault.governance.backup.proof import RestoreProof


class _CreateByDefault(TyperGroup):
    """``medvault backup DEST`` means ``medvault backup create DEST``.

    The nightly command stays short, and ``keys`` and ``verify`` still live beside it.
    (A destination literally named ``keys`` or ``verify`` needs ``./keys``.)
    """

    # Any: typer vendors its own click, whose Context type is private to typer.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


backup_app = typer.Typer(
    cls=_CreateByDefault,
    no_args_is_help=True,
    help="Back up the vault (databases and blobs; keys separately) and check backups. "
    "`medvault backup DEST` is short for `medvault backup create DEST`.",
)


class _ProgressObserver(Observer):
    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def stage(self, name: str, total: int | None = None) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(name, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)


@contextmanager
def _observed() -> Iterator[Observer]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with progress:
        yield _ProgressObserver(progress)


@contextmanager
def _backup_errors() -> Iterator[None]:
    """The backup package's refusals and failures become one line and exit 1."""
    from medvault.governance.backup.databases import DatabaseBackupError
    from medvault.governance.backup.manifest import ManifestError
    from medvault.governance.backup.service import BackupError, RestoreRefused

    try:
        with operational_errors():
            yield
    except RestoreRefused:
        raise  # `restore` lists every reason itself
    except (BackupError, DatabaseBackupError, ManifestError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))


Parallel = Annotated[
    int,
    typer.Option("--parallel", min=1, max=64, help="Blobs copied at once (S3 round trips overlap)"),
]


@backup_app.command("create")
def create(
    destination: Annotated[
        Path, typer.Argument(file_okay=False, help="Folder that collects backups (made if missing)")
    ],
    incremental_from: Annotated[
        Path | None,
        typer.Option(
            "--incremental-from",
            file_okay=False,
            exists=True,
            help="Link unchanged blobs from this backup (default: the newest in DEST)",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Copy every blob: start a new, independent chain")
    ] = False,
    parallel: Parallel = DEFAULT_PARALLEL,
) -> None:
    """Back up the three databases, then every blob, into a new folder DEST/<UTC time>.

    Prints the new backup's path. Blobs that the previous backup already holds are
    hard-linked, not copied again. Keys are never written (see `backup keys`).
    """
    from medvault.governance.backup.service import complete_backups, take_backup

    if full and incremental_from is not None:
        fail("Give --full or --incremental-from, not both.", code=2)
    settings = Settings()
    base = incremental_from
    if base is None and not full:
        previous = complete_backups(destination.expanduser().resolve())
        base = previous[-1] if previous else None
    started = time.monotonic()
    with _backup_errors(), _observed() as observer:
        result = take_backup(
            settings=settings,
            destination=destination,
            base=base.resolve() if base is not None else None,
            parallel=parallel,
            observer=observer,
        )
    _summary(result.manifest, time.monotonic() - started)
    typer.echo(str(result.path))


def _summary(manifest: Manifest, seconds: float) -> None:
    stats = manifest.blob_stats
    dumps = ", ".join(
        f"{role} ({entry.engine}, {human_size(entry.size)})"
        for role, entry in manifest.databases.items()
    )
    err.print(f"databases: {dumps}", soft_wrap=True)
    err.print(
        f"blobs: {stats.count} ({human_size(stats.bytes)}): {stats.copied} copied, "
        f"{stats.linked} linked from {manifest.base_backup or '-'}, "
        f"{stats.vanished} deleted while copying",
        soft_wrap=True,
    )
    checkpoint = manifest.audit_checkpoint
    err.print(
        "audit checkpoint: "
        + ("none yet" if checkpoint is None else f"tree size {checkpoint.tree_size}")
    )
    err.print(f"took {seconds:.1f} s")


@backup_app.command("keys")
def keys(
    destination: Annotated[
        Path, typer.Argument(file_okay=False, help="A folder apart from the backups")
    ],
) -> None:
    """Write the keyring, link secret and signing keys to DEST (mode 0600), never into a backup.

    Run it once, and again after every `medvault keys rotate`; keep every keyring a
    backup you keep may need.
    """
    from medvault.crypto.errors import KeyringError
    from medvault.governance.backup.keys import KeyExportRefused, export_keys

    settings = Settings()
    refuse_without_keyring(settings)
    try:
        exported = export_keys(settings=settings, destination=destination)
    except KeyExportRefused as exc:
        fail(str(exc))
    except KeyringError as exc:
        fail(str(exc), code=2)
    err.print(f"wrote {', '.join(exported.files)}; KEKs: {', '.join(exported.kek_ids)}")
    err.print("Keep this folder apart from the backups (a secret manager or offline medium).")
    typer.echo(str(exported.directory))


@backup_app.command("verify")
def verify(
    backup_dir: Annotated[Path, typer.Argument(file_okay=False, exists=True)],
    restored: Annotated[
        bool,
        typer.Option(
            "--restored",
            help="Also prove the vault configured here (a restore of this backup): "
            "every version decrypts, the audit log matches the backup's checkpoint",
        ),
    ] = False,
    parallel: Parallel = DEFAULT_PARALLEL,
) -> None:
    """Check every file of a backup against its manifest's SHA-256. Exits 1 on any mismatch."""
    from medvault.governance.backup.manifest import read_manifest
    from medvault.governance.backup.service import check_backup

    if restored:
        _require_proof_keys(Settings())
    with _backup_errors(), _observed() as observer:
        manifest = read_manifest(backup_dir)
        problems = check_backup(backup_dir, manifest=manifest, parallel=parallel, observer=observer)
    for problem in problems:
        typer.echo(f"MISMATCH {problem}")
    count = sum(1 for _ in manifest.files())
    if not problems:
        typer.echo(f"OK: {count} files match the manifest")
    healthy = not problems
    if restored:
        healthy = _prove(manifest) and healthy
    raise typer.Exit(0 if healthy else 1)


def restore(
    backup_dir: Annotated[Path, typer.Argument(file_okay=False, exists=True)],
    verify_after: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Then decrypt every version and prove the audit log against the backup",
        ),
    ] = False,
    parallel: Parallel = DEFAULT_PARALLEL,
) -> None:
    """Restore a backup into the EMPTY vault configured here (MEDVAULT_* settings).

    Refuses, changing nothing, when the target databases or blob store hold anything,
    or when a file does not match the manifest. Keys come from this configuration,
    never from the backup. Run `medvault migrate` afterwards if this medvault is newer.
    """
    from medvault.governance.backup.service import RestoreRefused, restore_backup

    settings = Settings()
    if verify_after:
        _require_proof_keys(settings)
    started = time.monotonic()
    try:
        with _backup_errors(), _observed() as observer:
            manifest = restore_backup(
                settings=settings, backup_dir=backup_dir, parallel=parallel, observer=observer
            )
    except RestoreRefused as exc:
        err.print("[red]Restore refused; nothing was changed:[/red]")
        for reason in exc.reasons[:50]:
            err.print(f"  {reason}", soft_wrap=True, markup=False)
        if len(exc.reasons) > 50:
            err.print(f"  ... and {len(exc.reasons) - 50} more")
        raise typer.Exit(1) from None
    err.print(
        f"restored {manifest.blob_stats.count} blobs and {len(manifest.databases)} databases from "
        f"{manifest.created_at} in {time.monotonic() - started:.1f} s"
    )
    typer.echo(f"restored {backup_dir}")
    if verify_after and not _prove(manifest):
        raise typer.Exit(1)


def _require_proof_keys(settings: Settings) -> None:
    """A proof needs the restored vault's own keys; refuse before anything is done."""
    refuse_without_keyring(settings)
    if not settings.audit_signing_key and not settings.audit_key_path.exists():
        fail(
            f"No audit signing key at {settings.audit_key_path} and MEDVAULT_AUDIT_SIGNING_KEY "
            "is not set: put the keys from `medvault backup keys` in place first.",
            code=2,
        )


def _prove(manifest: Manifest) -> bool:
    from medvault.governance.backup.proof import prove_restore

    runtime = open_runtime(Settings(), run_migrations=False)
    try:
        with _backup_errors(), _observed() as observer:
            observer.stage("proving the restore")
            proof = prove_restore(runtime=runtime, checkpoint=manifest.audit_checkpoint)
    finally:
        runtime.close()
    _print_proof(proof)
    return proof.healthy


def _print_proof(proof: RestoreProof) -> None:
    integrity = proof.integrity
    counts = "  ".join(f"{name}: {count}" for name, count in integrity.summary().items())
    typer.echo(f"versions: {counts}")
    for check in integrity.failures[:20]:
        typer.echo(
            f"  FAILED document {check.document_id} version {check.version}: "
            f"{check.outcome.value} ({check.reason or ''})"
        )
    audit = proof.audit
    typer.echo(
        f"audit log: tree size {audit.tree_size}, {audit.sealed} sealed events, "
        f"{audit.checkpoints} checkpoints: {'OK' if audit.healthy else 'FAILED'}"
    )
    for finding in audit.findings[:20]:
        at = "" if finding.index is None else f" [{finding.index}]"
        typer.echo(f"  {finding.kind.value}{at}: {finding.message}")
    checkpoint = proof.checkpoint
    if checkpoint is None:
        typer.echo("backup checkpoint: none (the log was never sealed before the backup)")
    elif proof.checkpoint_matches:
        typer.echo(
            f"backup checkpoint: tree size {checkpoint.tree_size} root {checkpoint.root_hash} "
            "matches and its signature verifies"
        )
    else:
        why = proof.checkpoint_problem or "see the findings above"
        typer.echo(f"backup checkpoint: tree size {checkpoint.tree_size} FAILED: {why}")
    typer.echo(
        "OK: the restore is proven" if proof.healthy else "FAILED: the restore is not proven"
    )
