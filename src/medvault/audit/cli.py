"""``medvault audit ...``: verify (and seal) the tamper-evident audit log, server side.

These commands open the clinical database and the audit signing key directly, so
they run where the vault's configuration is, like ``medvault verify``. Results go to
stdout and progress to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from medvault.cli.console import (
    err,
    fail,
    open_runtime,
    operational_errors,
    refuse_without_keyring,
)
from medvault.config import Settings

if TYPE_CHECKING:
    from medvault.audit.verify import AuditReport
    from medvault.runtime import Runtime

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


def _audit_runtime() -> Runtime:
    """The vault's runtime, refusing to invent keys where none exist.

    build_runtime generates missing keys outside production. A fresh audit key here
    would make every genuine checkpoint look forged, so its absence is an error.
    """
    settings = Settings()
    refuse_without_keyring(settings)
    if not settings.audit_signing_key and not settings.audit_key_path.exists():
        fail(
            f"No audit signing key at {settings.audit_key_path} and "
            "MEDVAULT_AUDIT_SIGNING_KEY is not set: checkpoints cannot be checked.",
            code=2,
        )
    return open_runtime(settings, run_migrations=False)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _print_report(report: AuditReport) -> None:
    summary = report.summary()
    typer.echo(
        f"audit log: tree size {report.tree_size}; {report.sealed} sealed events, "
        f"{report.unsealed} unsealed ({report.unsealed_late} committed after later "
        "events were sealed, which is fine)"
    )
    typer.echo(
        f"checked {report.checkpoints} signed checkpoints and {report.witness_files} "
        f"witness files in {report.witness_dir}"
    )
    if report.healthy:
        typer.echo("OK: every sealed event, node and checkpoint verifies")
        return
    first = report.first_bad
    if first is not None:
        where = "" if first.index is None else f" at leaf index {first.index}"
        typer.echo(f"FAILED{where} ({first.kind.value}): {first.message}")
    typer.echo(f"problems: {summary['problems']}")
    for finding in report.findings:
        at = "" if finding.index is None else f" [{finding.index}]"
        typer.echo(f"  {finding.kind.value}{at}: {finding.message}")
    shown = len(report.findings)
    total = sum(report.counts.values())
    if total > shown:
        typer.echo(f"  ... and {total - shown} more")


@audit_app.command("verify")
def verify(
    witness: Annotated[
        Path | None,
        typer.Option(
            "--witness",
            file_okay=False,
            help="Witness directory to compare against (default: the vault's own).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False,
) -> None:
    """Recompute every leaf, node, root and signature; name the first bad leaf index.

    Exits 1 when anything was edited, deleted, reordered, inserted or truncated.
    """
    from medvault.audit.verify import verify_log

    runtime = _audit_runtime()
    try:
        with operational_errors(), _progress() as progress:
            task = progress.add_task("verifying the audit log", total=None)
            report = verify_log(
                runtime=runtime,
                witness_dir=witness,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    finally:
        runtime.close()
    if as_json:
        findings = [
            {"kind": f.kind.value, "index": f.index, "message": f.message} for f in report.findings
        ]
        typer.echo(
            json.dumps(
                {**report.summary(), "witness_dir": str(report.witness_dir), "findings": findings}
            )
        )
    else:
        _print_report(report)
    raise typer.Exit(0 if report.healthy else 1)


@audit_app.command("seal")
def seal() -> None:
    """Seal waiting events now (a running server does this every few seconds anyway)."""
    from medvault.audit.sealer import SealerError, seal_pending

    runtime = _audit_runtime()
    try:
        with operational_errors():
            result = seal_pending(runtime=runtime)
    except SealerError as exc:
        fail(str(exc))
    finally:
        runtime.close()
    if result.busy:
        err.print("another sealer is working; it will seal the waiting events")
    typer.echo(json.dumps({"sealed": result.sealed, "tree_size": result.tree_size}))


if __name__ == "__main__":
    audit_app()
