"""``medvault fhir …``: server-side maintenance of the FHIR interface."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from medvault.config import ConfigurationError, Settings

fhir_app = typer.Typer(no_args_is_help=True, help="The FHIR R4 interface (server side).")
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    raise typer.Exit(code)


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
    from medvault.crypto.errors import KeyringError
    from medvault.fhir.backfill import backfill_sha1
    from medvault.runtime import build_runtime

    settings = Settings()
    if not settings.keyring and not settings.keyring_path.exists():
        _fail(
            f"No keyring at {settings.keyring_path} and MEDVAULT_KEYRING is not set. "
            "Run this where the vault's configuration is (MEDVAULT_DATA_DIR, ...).",
            code=2,
        )
    try:
        runtime = build_runtime(settings, run_migrations=True)
    except (ConfigurationError, KeyringError) as exc:
        _fail(str(exc), code=2)
    try:
        report = backfill_sha1(runtime, batch_size=batch_size)
    finally:
        runtime.close()
    typer.echo(f"filled {report.filled}, skipped {report.skipped}")
    for version_id, reason in report.failures:
        err.print(f"  {version_id}: {escape(reason)}")
    if report.skipped:
        raise typer.Exit(1)
