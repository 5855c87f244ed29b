"""What every ``medvault`` command group shares: messages, tables and the vault's runtime.

Human messages go to stderr and results to stdout, so output can be piped. Server-side
commands open the vault's databases, blob store and keyring directly; the helpers here
turn a refused configuration or an operational failure into a message and an exit
code, never a traceback.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from medvault.config import ConfigurationError, Settings
from medvault.kit.problems import Problem

if TYPE_CHECKING:
    from medvault.audit.context import AuditContext
    from medvault.runtime import Runtime

err = Console(stderr=True)
out = Console()

CLI_ACTOR = "cli"


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with ``message`` on stderr and exit ``code`` (2: wrong usage)."""
    err.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    raise typer.Exit(code)


def id_argument(raw: str, *, kind: str) -> uuid.UUID:
    """A command-line id, or exit 2 saying it is not a ``kind`` id."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        fail(f"{raw!r} is not a {kind} id.", code=2)


def cli_audit_context() -> AuditContext:
    """Who the audit log names for a server-side command: ``system:cli``."""
    from medvault.audit.context import AuditContext

    return AuditContext.system(CLI_ACTOR)


def table_console() -> Console:
    """Where to print a table: the terminal, or a wide console when output is piped."""
    # Piped output goes to scripts, files and pagers: don't squeeze it into 80 columns.
    if out.is_terminal:
        return out
    # A fresh console reads COLUMNS as it is now (the shared one read it at import).
    return Console(width=None if "COLUMNS" in os.environ else 200)


def own_command() -> str:
    """How the user ran this CLI (``.venv/bin/medvault``), so a printed hint works as typed."""
    invoked = Path(sys.argv[0])
    if invoked.name != "medvault":
        return "medvault"
    try:
        return str(invoked.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(invoked)


def human_size(size: int) -> str:
    """``1.5 MiB``: a byte count as people read it."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def open_runtime(settings: Settings, *, run_migrations: bool) -> Runtime:
    """The vault's runtime; refused settings are a clear message and exit 2, not a traceback."""
    from medvault.crypto.errors import KeyringError
    from medvault.db.patient_split import PatientSplitConflict
    from medvault.runtime import build_runtime

    try:
        return build_runtime(settings, run_migrations=run_migrations)
    except (ConfigurationError, KeyringError) as exc:
        fail(str(exc), code=2)
    except PatientSplitConflict as exc:
        # Moving patients to their own database stopped before dropping anything.
        fail(f"migration stopped: {exc}", code=1)


def refuse_without_keyring(settings: Settings) -> None:
    """Exit 2 unless the vault's keyring exists: build_runtime would otherwise generate
    a fresh one here, which can open nothing the vault stored."""
    if not settings.keyring and not settings.keyring_path.exists():
        fail(
            f"No keyring at {settings.keyring_path} and MEDVAULT_KEYRING is not set. "
            "Run this where the vault's configuration is (MEDVAULT_DATA_DIR, "
            "MEDVAULT_KEYRING_FILE, …).",
            code=2,
        )


def server_runtime(*, run_migrations: bool = False) -> Runtime:
    """The vault's own runtime for a command that reads stored data; needs its keyring."""
    settings = Settings()
    refuse_without_keyring(settings)
    return open_runtime(settings, run_migrations=run_migrations)


@contextmanager
def operational_errors() -> Iterator[None]:
    """A database or blob-store failure ends the command with a one-line message."""
    from sqlalchemy.exc import SQLAlchemyError

    from medvault.storage.base import BlobStoreError

    try:
        yield
    except SQLAlchemyError as exc:
        # The class and first line only: the rest quotes parameters (record contents).
        fail(f"Database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    except BlobStoreError as exc:
        fail(f"Blob store error: {exc}")


@contextmanager
def admin_runtime() -> Iterator[Runtime]:
    """The vault's runtime (migrated, as ``token create`` does) for one administrative
    command; a refusal from a service, such as an unknown user, ends it with a message."""
    runtime = open_runtime(Settings(), run_migrations=True)
    try:
        with operational_errors():
            yield runtime
    except Problem as exc:
        fail(exc.detail or exc.title)
    finally:
        runtime.close()
