"""``medvault fhir …``: server-side maintenance of the FHIR interface."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from medvault.cli.console import err, server_runtime

fhir_app = typer.Typer(no_args_is_help=True, help="The FHIR R4 interface (server side).")


@fhir_app.command("backfill-hashes")
def backfill_hashes(
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10_000, help="Versions per listing batch")
    ] = 200,
) -> None:
    """Store the SHA-1 (FHIR Attachment.hash) of versions uploaded before it was kept.

    Each version is decrypted as a stream and its SHA-256 re-checked first; versions
    that fail are listed and left without a hash (run `medvault verify` on them).
    """
    from medvault.fhir.backfill import backfill_sha1

    runtime = server_runtime(run_migrations=True)
    try:
        report = backfill_sha1(runtime, batch_size=batch_size)
    finally:
        runtime.close()
    typer.echo(f"filled {report.filled}, skipped {report.skipped}")
    for version_id, reason in report.failures:
        err.print(f"  {version_id}: {escape(reason)}")
    if report.skipped:
        raise typer.Exit(1)
