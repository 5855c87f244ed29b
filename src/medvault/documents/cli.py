"""Server-side document commands: ``medvault verify`` and ``medvault keys rotate``.

They open the clinical database, the blob store and the keyring directly, so they run
where the vault's configuration is. ``verify`` is mounted at the top level of the
``medvault`` command; ``keys`` is a group of its own.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from medvault.cli.console import (
    err,
    fail,
    human_size,
    id_argument,
    operational_errors,
    server_runtime,
    table_console,
)

if TYPE_CHECKING:
    from medvault.documents.integrity import Finding, IntegrityReport

keys_app = typer.Typer(no_args_is_help=True, help="Key-encryption keys (server side).")


def _spinner() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _finding_json(finding: Finding) -> dict[str, object]:
    from medvault.documents.integrity import OrphanBlob

    if isinstance(finding, OrphanBlob):
        blob = finding.blob
        return {
            "kind": "orphan",
            "key": blob.key,
            "size": blob.size,
            "modified": blob.modified.isoformat(),
        }
    return {
        "kind": finding.outcome.value if finding.outcome.value != "ok" else "restored",
        "document_id": str(finding.document_id),
        "version_id": str(finding.version_id),
        "version": finding.version,
        "reason": finding.reason,
    }


def _print_report(report: IntegrityReport) -> None:
    console = table_console()
    if report.failures:
        table = Table("Document", "Version", "Problem", "Reason", title="Failed versions")
        table.columns[0].no_wrap = True
        for check in report.failures:
            table.add_row(
                str(check.document_id),
                str(check.version),
                check.outcome.value,
                escape(check.reason or ""),
            )
        console.print(table)
        listed = len(report.failures)
        failed = report.corrupt + report.missing + report.unverifiable
        if failed > listed:
            console.print(f"… and {failed - listed} more (use --json for all)")
    if report.orphan_blobs:
        table = Table("Blob key", "Size", "Modified (UTC)", title="Orphan blobs (no version)")
        for blob in report.orphan_blobs:
            table.add_row(
                escape(blob.key), human_size(blob.size), f"{blob.modified:%Y-%m-%d %H:%M}"
            )
        console.print(table)
    counts = report.summary()
    if not report.orphans_scanned:
        counts.pop("orphans")
    console.print("  ".join(f"{name}: {count}" for name, count in counts.items()), soft_wrap=True)


def verify(
    document_id: Annotated[
        str | None, typer.Argument(help="Verify this document's current version")
    ] = None,
    all_versions: Annotated[
        bool, typer.Option("--all", help="Every version of every document, and orphan blobs")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Decrypt stored versions, check their SHA-256, and mark or clear corruption.

    Exits 1 when any checked version is corrupt, missing or could not be checked.
    """
    from medvault.documents import integrity

    if (document_id is None) != all_versions:
        fail("Give either a DOCUMENT_ID or --all.", code=2)
    target = id_argument(document_id, kind="document") if document_id is not None else None

    def emit(finding: Finding) -> None:
        if as_json:
            typer.echo(json.dumps(_finding_json(finding)))

    runtime = server_runtime()
    try:
        with operational_errors(), _spinner() as progress:
            task = progress.add_task("verifying")
            if target is not None:
                report = integrity.verify_document(
                    runtime=runtime, document_id=target, on_finding=emit
                )
            else:
                report = integrity.verify_all(
                    runtime=runtime,
                    on_finding=emit,
                    on_progress=lambda n: progress.update(task, description=f"verified {n}"),
                )
    except integrity.UnknownDocumentError:
        fail(f"No document {document_id}.")
    finally:
        runtime.close()
    if as_json:
        typer.echo(json.dumps({"kind": "summary", **report.summary()}))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.healthy else 1)


@keys_app.command("rotate")
def keys_rotate(
    rewrap_only: Annotated[
        bool,
        typer.Option(
            "--rewrap-only",
            help="Add no key; re-wrap rows not on the active KEK "
            "(finishes an interrupted rotation)",
        ),
    ] = False,
) -> None:
    """Add a new active KEK to the keyring file and re-wrap every data key under it.

    Blobs are not rewritten. Running instances can still read everything (they reload
    the keyring file on meeting an unknown KEK) but keep wrapping new uploads under the
    KEK they loaded until restarted. Prints the active KEK id on stdout.
    """
    from medvault.crypto.errors import KeyringError
    from medvault.documents.rotation import RotationRefusedError, rotate_keys

    runtime = server_runtime()
    try:
        with operational_errors(), _spinner() as progress:
            task = progress.add_task("re-wrapping data keys")
            result = rotate_keys(
                runtime=runtime,
                rewrap_only=rewrap_only,
                on_progress=lambda n: progress.update(task, description=f"walked {n} versions"),
            )
    except (RotationRefusedError, KeyringError) as exc:
        fail(str(exc))
    finally:
        runtime.close()
    if result.created_kek:
        err.print(f"new active KEK {result.active_kek_id} (previous {result.previous_kek_id})")
        # Instances notice the changed file at their next upload; uploads already in
        # flight were wrapped under the old KEK and commit after this pass.
        err.print(
            "Running instances that share this keyring file use the new KEK from their next "
            "upload on. Uploads in flight right now keep the old one: run "
            "`medvault keys rotate --rewrap-only` later to re-wrap them.",
            soft_wrap=True,
        )
    err.print(
        f"re-wrapped {result.rewrapped} data keys; "
        f"{result.already_current} were already on {result.active_kek_id}"
    )
    typer.echo(result.active_kek_id)
    if result.failed:
        for version_id, reason in result.failures:
            err.print(f"[red]version {version_id}: {escape(reason)}[/red]")
        fail(
            f"{result.failed} data keys could not be re-wrapped; they still use their old "
            "KEK. Fix the cause and run `medvault keys rotate --rewrap-only`."
        )


@keys_app.command("retire")
def keys_retire(
    kek_id: Annotated[str, typer.Argument(help="An inactive KEK id (see `keys rotate`)")],
) -> None:
    """Remove an old KEK from the keyring file, once no data key is wrapped under it.

    Everything it wrapped becomes unreadable: old blob headers, and database backups
    taken before the last rotation. That is what makes a destroyed record's copies
    unreadable too (README "Records governance"). Refused while rows still use it.
    """
    from medvault.crypto.errors import KeyringError
    from medvault.documents.rotation import RotationRefusedError, retire_kek

    runtime = server_runtime()
    try:
        with operational_errors():
            retire_kek(runtime, kek_id)
    except (RotationRefusedError, KeyringError) as exc:
        fail(str(exc))
    finally:
        runtime.close()
    err.print(f"retired {escape(kek_id)}; the active KEK is {runtime.keyring.active_id}")
