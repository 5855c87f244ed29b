"""`medvault retention`: the schedule in force, and an appraisal run on demand."""

from __future__ import annotations

import json
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
