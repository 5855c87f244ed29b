"""`medvault retention`: the schedule in force, and an appraisal run on demand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from medvault.cli.console import err, operational_errors, server_runtime, table_console

retention_app = typer.Typer(no_args_is_help=True, help="Retention schedules and appraisal.")


@retention_app.command("classes")
def classes(as_json: Annotated[bool, typer.Option("--json", help="JSON")] = False) -> None:
    """The retention classes in force (preset plus MEDVAULT_RETENTION_FILE), and their types."""
    from medvault.governance.catalogue import describe_schedule

    runtime = server_runtime()
    try:
        described = describe_schedule(runtime.retention)
    finally:
        runtime.close()
    if as_json:
        typer.echo(described.model_dump_json(indent=2))
        return
    table = Table("class", "rules (first that applies)", "document types")
    for item in described.items:
        rules = "; ".join(
            ("" if rule.when == "always" else f"if {rule.when}: ")
            + " or ".join(f"{years}y after {anchor}" for anchor, years in rule.after.items())
            for rule in item.rules
        )
        types = ", ".join(item.document_types) + (" (default)" if item.default else "")
        table.add_row(escape(item.name), escape(rules or "keep indefinitely"), escape(types))
    table_console().print(table)


@retention_app.command("appraise")
def appraise() -> None:
    """Recompute every record's retention date and list what is past it, now.

    The same work the periodic appraisal job does (MEDVAULT_APPRAISAL_INTERVAL_SECONDS).
    Prints a JSON summary: documents whose date changed, newly listed, skipped as held.
    """
    from medvault.governance import appraisal

    runtime = server_runtime()
    try:
        with operational_errors():
            report = appraisal.run(runtime)
    finally:
        runtime.close()
    err.print(f"listed {report.listed} for appraisal; {report.held} held")
    typer.echo(json.dumps(report.summary()))


export_app = typer.Typer(no_args_is_help=True, help="Patients' export archives.")


@export_app.command("verify")
def verify_export(
    archive: Annotated[Path, typer.Argument(help="The downloaded .zip", exists=True)],
    passphrase_file: Annotated[
        Path | None, typer.Option(help="A file holding the passphrase; else it is asked for")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Insist on this audit key fingerprint (SHA256:...)")
    ] = None,
) -> None:
    """Check an export archive offline: file hashes, signatures and audit proofs.

    Needs no server, database or keys: the same code as the archive's own
    verify_export.py. Exits 1 and names every problem when anything does not check out.
    """
    from medvault.governance import export_verifier

    args = [str(archive)]
    if passphrase_file is not None:
        args += ["--passphrase-file", str(passphrase_file)]
    if key is not None:
        args += ["--key", key]
    raise typer.Exit(export_verifier.main(args))
