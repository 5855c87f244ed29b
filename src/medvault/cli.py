"""The ``medvault`` command: server operations and a client for the REST API.

Client commands (patient, upload, ls, get, rm) talk HTTP through :mod:`medvault.client`.
Server commands (serve, migrate, token, verify, keys) open the databases, blob store and
keyring directly and must run where the vault's configuration is. Progress and human
messages go to stderr and results to stdout, so output can be piped.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from medvault.audit.cli import audit_app
from medvault.auth.cli import careteam_app, user_app
from medvault.client import (
    VaultClient,
    VaultConnectionError,
    VaultError,
    VaultTransferError,
)
from medvault.config import ConfigurationError, Settings
from medvault.documents.models import Classification
from medvault.documents.schemas import OnDuplicate
from medvault.fhir.cli import fhir_app
from medvault.kit.clock import utcnow

if TYPE_CHECKING:
    from medvault.documents.integrity import Finding, IntegrityReport
    from medvault.runtime import Runtime

app = typer.Typer(no_args_is_help=True, help="medvault: an encrypted clinical document vault.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens.")
app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")
app.add_typer(careteam_app, name="careteam")
app.add_typer(audit_app, name="audit")
patient_app = typer.Typer(no_args_is_help=True, help="Patients (through the REST API).")
app.add_typer(patient_app, name="patient")
keys_app = typer.Typer(no_args_is_help=True, help="Key-encryption keys (server side).")
app.add_typer(keys_app, name="keys")
app.add_typer(fhir_app, name="fhir")

err = Console(stderr=True)
out = Console()

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = Annotated[
    str, typer.Option("--url", envvar="MEDVAULT_URL", help="The vault's base URL.")
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MEDVAULT_TOKEN",
        show_default=False,
        help="API token. Prefer MEDVAULT_TOKEN: arguments are visible to other users.",
    ),
]


def _settings() -> Settings:
    return Settings()


def _open_runtime(settings: Settings, *, run_migrations: bool) -> Runtime:
    """The vault's runtime; refused settings are a clear message and exit 2, not a traceback."""
    from medvault.crypto.errors import KeyringError
    from medvault.runtime import build_runtime

    try:
        return build_runtime(settings, run_migrations=run_migrations)
    except (ConfigurationError, KeyringError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default MEDVAULT_HOST)"),
    port: int | None = typer.Option(None, help="Port (default MEDVAULT_PORT)"),
    ssl_certfile: Path | None = typer.Option(
        None, "--ssl-certfile", exists=True, dir_okay=False, help="TLS certificate (PEM)"
    ),
    ssl_keyfile: Path | None = typer.Option(
        None, "--ssl-keyfile", exists=True, dir_okay=False, help="TLS private key (PEM)"
    ),
) -> None:
    """Apply migrations and run the vault (over TLS when given a certificate and key)."""
    import uvicorn

    from medvault.app import create_app
    from medvault.kit.private_files import exposure_warning
    from medvault.ops.server import uvicorn_options

    # Belt and braces to the explicit modes in kit.private_files: anything else this
    # process writes (a library's temp file, a SQLite journal) is owner-only too.
    os.umask(0o077)
    settings = _settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    exposure = exposure_warning(settings.resolved_data_dir)
    if exposure:
        err.print(f"[yellow]warning:[/yellow] {escape(exposure)}")
    runtime = _open_runtime(settings, run_migrations=True)
    _announce_first_users(runtime)
    application = create_app(runtime=runtime, run_sealer=True)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        _fail("Give both --ssl-certfile and --ssl-keyfile, or neither.", code=2)
    bind_host, bind_port = host or settings.host, port if port is not None else settings.port
    scheme = "https" if ssl_certfile else "http"
    err.print(
        f"medvault listening on {scheme}://{bind_host}:{bind_port}/  "
        "(portal: open it in a browser; API docs: /docs)"
    )
    uvicorn.run(
        application,
        host=bind_host,
        port=bind_port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        **uvicorn_options(settings),
    )


def _announce_first_users(runtime: Runtime) -> None:
    """On an empty vault, create the first admin (and, outside production, a clinician)
    and show their passwords once, on a terminal only."""
    from medvault.auth.bootstrap import ensure_first_admin, ensure_first_clinician

    try:
        admin = ensure_first_admin(runtime)
    except ConfigurationError as exc:  # e.g. a configured password that is too short
        _fail(str(exc), code=2)
    clinician = ensure_first_clinician(runtime)
    created = [(name, pw) for name, pw in (("admin", admin), ("clinician", clinician)) if pw]
    if not created:
        return
    if sys.stderr.isatty():
        for name, password in created:
            err.print(
                f"Created user [bold]{name}[/bold] with password [bold]{escape(password)}[/bold]"
                " (shown once)."
            )
        if clinician:
            err.print(
                "Log in to the portal as [bold]clinician[/bold] to register a patient and "
                "file documents; [bold]admin[/bold] manages users and care teams."
            )
    else:
        # Container and service logs are kept and shipped: never write a password there.
        names = " and ".join(name for name, _ in created)
        err.print(
            f"Created {names} with random passwords that are not shown because this is not "
            f"a terminal. Set them with: {_own_command()} user password <username>"
        )


def _own_command() -> str:
    """How the user ran this CLI (``.venv/bin/medvault``), so a printed hint works as typed."""
    invoked = Path(sys.argv[0])
    if invoked.name != "medvault":
        return "medvault"
    try:
        return str(invoked.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(invoked)


@app.command()
def migrate() -> None:
    """Apply database migrations to both databases, then exit."""
    _open_runtime(_settings(), run_migrations=True).close()
    err.print("migrations applied")


@token_app.command("create")
def token_create(
    name: str = typer.Option(..., "--name", help="Who or what the token is for"),
    scope: list[str] = typer.Option(
        ["*"], "--scope", help="A permission such as documents:read; repeat for more (default *)"
    ),
    expires_in_days: int | None = typer.Option(
        None, "--expires-in-days", min=1, help="Stop working after this many days"
    ),
    user: str | None = typer.Option(
        None,
        "--user",
        help="The user the token belongs to: it dies with the account, and a patient "
        "user's token reaches that patient with SMART patient/ scopes",
    ),
) -> None:
    """Print a new service-account API token on stdout (shown once, stored only as a hash)."""
    from medvault.auth import repository as auth_repository
    from medvault.auth.service import create_api_token
    from medvault.auth.sessions import normalise_username

    runtime = _open_runtime(_settings(), run_migrations=True)
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    try:
        with runtime.auth.session() as session:
            owner = None
            if user is not None:
                found = auth_repository.user_by_username(session, normalise_username(user))
                if found is None:
                    raise ValueError(f"no user {user!r}")
                owner = found.id
            issued = create_api_token(
                session=session,
                name=name,
                scopes=tuple(scope),
                expires_at=expires_at,
                user_id=owner,
            )
            session.commit()
    except ValueError as exc:
        _fail(str(exc), code=2)
    finally:
        runtime.close()
    typer.echo(issued.token)


@token_app.command("list")
def token_list() -> None:
    """List API tokens: id, name, scopes, expiry and whether revoked (never the token)."""
    from medvault.auth.service import list_api_tokens

    runtime = _open_runtime(_settings(), run_migrations=False)
    try:
        with runtime.auth.read_session() as session:
            rows = list_api_tokens(session=session)
            table = Table("Id", "Name", "Scopes", "Expires", "Revoked")
            for row in rows:
                table.add_row(
                    str(row.id),
                    escape(row.name),
                    " ".join(row.scopes),
                    f"{row.expires_at:%Y-%m-%d %H:%M}" if row.expires_at else "never",
                    f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
                )
    finally:
        runtime.close()
    Console().print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="The token's id from `token list`"),
) -> None:
    """Revoke an API token; it stops working on its next request."""
    from medvault.auth.service import revoke_api_token

    try:
        parsed = uuid.UUID(token_id)
    except ValueError:
        _fail("That is not a token id; see `medvault token list`.", code=2)
    runtime = _open_runtime(_settings(), run_migrations=False)
    try:
        with runtime.auth.session() as session:
            found = revoke_api_token(session=session, token_id=parsed)
            session.commit()
    finally:
        runtime.close()
    if not found:
        _fail("No token with that id.")
    err.print(f"revoked token {parsed}")


# -- shared by the client commands ------------------------------------------------------


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    raise typer.Exit(code)


def _table_console() -> Console:
    # Piped output goes to scripts, files and pagers: don't squeeze it into 80 columns.
    if out.is_terminal:
        return out
    # A fresh console reads COLUMNS as it is now (the shared one read it at import).
    return Console(width=None if "COLUMNS" in os.environ else 200)


def _problem_message(exc: VaultError) -> str:
    message = exc.title + (f": {exc.detail}" if exc.detail else "")
    for error in exc.extensions.get("errors") or []:
        if isinstance(error, dict):
            where = ".".join(str(part) for part in error.get("loc", []) if part != "query")
            message += f"\n  {where}: {error.get('msg', '')}"
    return message


@contextmanager
def _vault(url: str, token: str | None) -> Iterator[VaultClient]:
    """A client whose errors end the command with a message and exit 1, never a traceback."""
    if not token:
        _fail(
            "No API token: pass --token or set MEDVAULT_TOKEN "
            "(an administrator makes one with `medvault token create`).",
            code=2,
        )
    try:
        with VaultClient(url, token) as vault:
            yield vault
    except VaultError as exc:
        _fail(_problem_message(exc))
    except VaultConnectionError:
        _fail(
            f"Cannot connect to the vault at {url}. Is it running? "
            "Set --url or MEDVAULT_URL to its address."
        )
    except VaultTransferError as exc:
        _fail(str(exc))


def _transfer_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        # On a pipe or log file a live bar is noise (and leaves blank lines behind).
        disable=not err.is_terminal,
    )


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- client commands -------------------------------------------------------------------


@patient_app.command("add")
def patient_add(
    system: Annotated[str, typer.Option("--system", help="Identifier system URI")],
    value: Annotated[str, typer.Option("--value", help="Identifier value")],
    family: Annotated[str, typer.Option("--family", help="Family name")],
    given: Annotated[str, typer.Option("--given", help="Given name")],
    birth_date: Annotated[datetime, typer.Option("--birth-date", formats=["%Y-%m-%d"])],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Register a patient and print its id."""
    with _vault(url, token) as vault:
        patient = vault.create_patient(
            system=system,
            value=value,
            family_name=family,
            given_name=given,
            birth_date=birth_date.date(),
        )
    typer.echo(patient.id)


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    patient: Annotated[str, typer.Option("--patient", help="Patient id")],
    document_type: Annotated[str, typer.Option("--type", help="LOINC code, e.g. 11502-2")],
    title: Annotated[str | None, typer.Option("--title")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    classification: Annotated[Classification | None, typer.Option("--classification")] = None,
    on_duplicate: Annotated[OnDuplicate | None, typer.Option("--on-duplicate")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Upload a file as a new document and print the document id."""
    with _vault(url, token) as vault, _transfer_progress() as progress:
        task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)
        document = vault.upload(
            path,
            patient_id=patient,
            document_type=document_type,
            title=title,
            description=description,
            classification=classification.value if classification else None,
            on_duplicate=on_duplicate.value if on_duplicate else None,
            progress=lambda sent: progress.update(task, completed=sent),
        )
    err.print(f"uploaded {escape(path.name)} as version {document.version} of {document.id}")
    typer.echo(document.id)


@app.command("ls")
def list_documents(
    patient: Annotated[str | None, typer.Option("--patient", help="Only this patient")] = None,
    document_type: Annotated[str | None, typer.Option("--type", help="Only this LOINC")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List documents, newest first."""
    table = Table("Title", "Type", "Ver", "Size", "Created (UTC)", "Id")
    table.columns[2].justify = table.columns[3].justify = "right"
    table.columns[5].no_wrap = True
    table.columns[5].min_width = 36
    shown = 0
    with _vault(url, token) as vault:
        documents = vault.iter_documents(
            patient_id=patient, document_type=document_type, page_size=min(limit, 200)
        )
        for document in islice(documents, limit):
            shown += 1
            if as_json:
                typer.echo(json.dumps(document.raw, ensure_ascii=False))
                continue
            table.add_row(
                escape(document.title),
                document.document_type,
                str(document.version),
                _human_size(document.size),
                f"{document.created_at:%Y-%m-%d %H:%M}",
                document.id,
            )
    if not as_json:
        if shown:
            _table_console().print(table)
        else:
            err.print("no documents")


@app.command()
def get(
    document_id: Annotated[str, typer.Argument(help="Document id")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="File or folder (default: server's name, here)"),
    ] = None,
    version: Annotated[int | None, typer.Option("--version", min=1)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Download a document's current (or given) version; its SHA-256 is verified."""
    dest = output if output is not None else Path.cwd()
    if not force and not dest.is_dir() and dest.exists():
        _fail(f"{dest} already exists; pass --force to replace it.")
    with _vault(url, token) as vault, _transfer_progress() as progress:
        task = progress.add_task("downloading", total=None)

        def show(received: int, total: int | None) -> None:
            progress.update(task, completed=received, total=total)

        try:
            result = vault.download(
                document_id, dest, version=version, progress=show, overwrite=force
            )
        except FileExistsError as exc:
            _fail(f"{exc}; pass --force to replace it.")
        except OSError as exc:
            _fail(f"Cannot write {exc.filename or dest}: {exc.strerror or exc}")
    err.print(f"wrote {escape(str(result.path))} ({_human_size(result.size)}, SHA-256 verified)")
    typer.echo(str(result.path))


@app.command("rm")
def remove(
    document_id: Annotated[str, typer.Argument(help="Document id")],
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the audit log")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Delete a document (soft: an administrator can restore it)."""
    with _vault(url, token) as vault:
        document = vault.delete(document_id, reason)
    err.print(f"deleted {escape(document.title)} ({document.id})")


# -- server-side commands --------------------------------------------------------------


def _server_runtime() -> Runtime:
    """The vault's own runtime, refusing to invent a keyring where none exists."""
    settings = _settings()
    if not settings.keyring and not settings.keyring_path.exists():
        # build_runtime would generate a fresh keyring here, which can open nothing.
        _fail(
            f"No keyring at {settings.keyring_path} and MEDVAULT_KEYRING is not set. "
            "Run this where the vault's configuration is (MEDVAULT_DATA_DIR, "
            "MEDVAULT_KEYRING_FILE, …).",
            code=2,
        )
    return _open_runtime(settings, run_migrations=False)


@contextmanager
def _operational_errors() -> Iterator[None]:
    from sqlalchemy.exc import SQLAlchemyError

    from medvault.storage.base import BlobStoreError

    try:
        yield
    except SQLAlchemyError as exc:
        _fail(f"Database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    except BlobStoreError as exc:
        _fail(f"Blob store error: {exc}")


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
    console = _table_console()
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
                escape(blob.key), _human_size(blob.size), f"{blob.modified:%Y-%m-%d %H:%M}"
            )
        console.print(table)
    counts = report.summary()
    if not report.orphans_scanned:
        counts.pop("orphans")
    console.print("  ".join(f"{name}: {count}" for name, count in counts.items()), soft_wrap=True)


@app.command()
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
        _fail("Give either a DOCUMENT_ID or --all.", code=2)
    target: uuid.UUID | None = None
    if document_id is not None:
        try:
            target = uuid.UUID(document_id)
        except ValueError:
            _fail(f"{document_id!r} is not a document id.", code=2)

    def emit(finding: Finding) -> None:
        if as_json:
            typer.echo(json.dumps(_finding_json(finding)))

    runtime = _server_runtime()
    try:
        with _operational_errors(), _spinner() as progress:
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
        _fail(f"No document {document_id}.")
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
    from medvault.crypto.rotation import RotationRefusedError, rotate_keys

    runtime = _server_runtime()
    try:
        with _operational_errors(), _spinner() as progress:
            task = progress.add_task("re-wrapping data keys")
            result = rotate_keys(
                runtime=runtime,
                rewrap_only=rewrap_only,
                on_progress=lambda n: progress.update(task, description=f"walked {n} versions"),
            )
    except (RotationRefusedError, KeyringError) as exc:
        _fail(str(exc))
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
        _fail(
            f"{result.failed} data keys could not be re-wrapped; they still use their old "
            "KEK. Fix the cause and run `medvault keys rotate --rewrap-only`."
        )


if __name__ == "__main__":
    app()
