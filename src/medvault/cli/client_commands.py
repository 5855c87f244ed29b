"""Client commands: ``upload``, ``ls``, ``get``, ``rm`` and ``patient add``.

They talk HTTP to a running vault through :mod:`medvault.client`, with an API token,
so they run anywhere the vault is reachable. Progress and messages go to stderr and
results to stdout. A large upload goes through tus (``cli.resumable_upload``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from medvault.cli.console import err, fail, human_size, table_console
from medvault.cli.resumable_upload import NewDocument, upload_resumably
from medvault.client import (
    VaultClient,
    VaultClientError,
    VaultConnectionError,
    VaultError,
)
from medvault.documents.models import Classification
from medvault.documents.schemas import OnDuplicate

patient_app = typer.Typer(no_args_is_help=True, help="Patients (through the REST API).")

DEFAULT_URL = "http://127.0.0.1:8000"
MiB = 1024 * 1024
# Larger files go through tus unless --no-resumable: one broken connection then costs
# at most a chunk, not the whole transfer.
RESUMABLE_ABOVE = 8 * MiB
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


def _problem_message(exc: VaultError) -> str:
    message = exc.title + (f": {exc.detail}" if exc.detail else "")
    for error in exc.extensions.get("errors") or []:
        if isinstance(error, dict):
            where = ".".join(str(part) for part in error.get("loc", []) if part != "query")
            message += f"\n  {where}: {error.get('msg', '')}"
    return message


def _with_notes(message: str, exc: BaseException) -> str:
    """The message, then what the code that saw the error added (e.g. how to resume)."""
    return "\n".join([message, *getattr(exc, "__notes__", [])])


@contextmanager
def _vault(url: str, token: str | None) -> Iterator[VaultClient]:
    """A client whose errors end the command with a message and exit 1, never a traceback."""
    if not token:
        fail(
            "No API token: pass --token or set MEDVAULT_TOKEN "
            "(an administrator makes one with `medvault token create`).",
            code=2,
        )
    try:
        with VaultClient(url, token) as vault:
            yield vault
    except VaultError as exc:
        fail(_with_notes(_problem_message(exc), exc))
    except VaultConnectionError as exc:
        fail(
            _with_notes(
                f"Cannot connect to the vault at {url}. Is it running? "
                "Set --url or MEDVAULT_URL to its address.",
                exc,
            )
        )
    except VaultClientError as exc:  # a broken transfer, or a file that changed
        fail(_with_notes(str(exc), exc))


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


def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    patient: Annotated[str, typer.Option("--patient", help="Patient id")],
    document_type: Annotated[str, typer.Option("--type", help="LOINC code, e.g. 11502-2")],
    title: Annotated[str | None, typer.Option("--title")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    classification: Annotated[Classification | None, typer.Option("--classification")] = None,
    on_duplicate: Annotated[OnDuplicate | None, typer.Option("--on-duplicate")] = None,
    resumable: Annotated[
        bool | None,
        typer.Option(
            "--resumable/--no-resumable",
            show_default=False,
            help="Upload in chunks (tus) that survive a broken connection; "
            f"the default for files over {RESUMABLE_ABOVE // MiB} MiB",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue an interrupted upload of this file (implies --resumable)"
        ),
    ] = False,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="MiB per request of a resumable upload")
    ] = 8,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Upload a file as a new document and print the document id."""
    if resume and resumable is False:
        fail("--resume continues a resumable upload; drop --no-resumable.", code=2)
    size = path.stat().st_size
    through_tus = resume or (resumable if resumable is not None else size > RESUMABLE_ABOVE)
    document = NewDocument(
        patient_id=patient,
        document_type=document_type,
        title=title,
        description=description,
        classification=classification.value if classification else None,
        on_duplicate=on_duplicate.value if on_duplicate else None,
    )
    with _vault(url, token) as vault, _transfer_progress() as progress:
        task = progress.add_task(f"uploading {path.name}", total=size)

        def show(sent: int) -> None:
            progress.update(task, completed=sent)

        if through_tus:
            stored = upload_resumably(
                vault, path, document, resume=resume, chunk_bytes=chunk_size * MiB, progress=show
            )
        else:
            stored = vault.upload(
                path,
                patient_id=document.patient_id,
                document_type=document.document_type,
                title=document.title,
                description=document.description,
                classification=document.classification,
                on_duplicate=document.on_duplicate,
                progress=show,
            )
    err.print(f"uploaded {escape(path.name)} as version {stored.version} of {stored.id}")
    typer.echo(stored.id)


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
                human_size(document.size),
                f"{document.created_at:%Y-%m-%d %H:%M}",
                document.id,
            )
    if not as_json:
        if shown:
            table_console().print(table)
        else:
            err.print("no documents")


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
        fail(f"{dest} already exists; pass --force to replace it.")
    with _vault(url, token) as vault, _transfer_progress() as progress:
        task = progress.add_task("downloading", total=None)

        def show(received: int, total: int | None) -> None:
            progress.update(task, completed=received, total=total)

        try:
            result = vault.download(
                document_id, dest, version=version, progress=show, overwrite=force
            )
        except FileExistsError as exc:
            fail(f"{exc}; pass --force to replace it.")
        except OSError as exc:
            fail(f"Cannot write {exc.filename or dest}: {exc.strerror or exc}")
    err.print(f"wrote {escape(str(result.path))} ({human_size(result.size)}, SHA-256 verified)")
    typer.echo(str(result.path))


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
