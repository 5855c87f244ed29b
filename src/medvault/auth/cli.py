"""Server-side ``medvault user …`` and ``medvault careteam …`` commands.

They open the vault's databases directly (like ``medvault token create``), so they
run where the vault's configuration is, and act as the audit actor ``system:cli``.
Results go to stdout and messages to stderr, so output can be piped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medvault.audit.context import AuditContext
from medvault.config import ConfigurationError, Settings
from medvault.kit.problems import Problem

if TYPE_CHECKING:
    from medvault.runtime import Runtime

user_app = typer.Typer(no_args_is_help=True, help="User accounts (server side).")
careteam_app = typer.Typer(no_args_is_help=True, help="Care teams (server side).")

err = Console(stderr=True)
CLI_ACTOR = "cli"


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _runtime() -> Iterator[Runtime]:
    """The vault's runtime (migrated, as ``token create`` does); errors end with a message."""
    from sqlalchemy.exc import SQLAlchemyError

    from medvault.crypto.errors import KeyringError
    from medvault.runtime import build_runtime

    try:
        runtime = build_runtime(Settings(), run_migrations=True)
    except (ConfigurationError, KeyringError) as exc:
        _fail(str(exc), code=2)
    try:
        yield runtime
    except Problem as exc:
        _fail(exc.detail or exc.title)
    except SQLAlchemyError as exc:
        _fail(f"Database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    finally:
        runtime.close()


def _context() -> AuditContext:
    return AuditContext.system(CLI_ACTOR)


def _patient_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        _fail(f"{raw!r} is not a patient id.", code=2)


# -- users -----------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="3-64 characters: a-z 0-9 . _ -")],
    email: Annotated[str, typer.Option("--email", help="The user's email address")],
    role: Annotated[str, typer.Option("--role", help="admin, clinician, patient or auditor")],
    patient: Annotated[
        str | None, typer.Option("--patient", help="Patient users: their patient id")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="MEDVAULT_NEW_USER_PASSWORD",
            show_default=False,
            help="Prefer MEDVAULT_NEW_USER_PASSWORD or the prompt: arguments are visible "
            "to other users of this machine.",
        ),
    ] = None,
) -> None:
    """Create a user and print its id. Prompts for the password unless given."""
    from medvault.auth import users
    from medvault.auth.principal import Role
    from medvault.auth.service import commit_with_audit

    try:
        user_role = Role(role.strip().lower())
    except ValueError:
        _fail(f"Unknown role {role!r}: use admin, clinician, patient or auditor.", code=2)
    patient_id = _patient_id(patient) if patient else None
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _runtime() as runtime, runtime.auth.session() as auth, runtime.clinical.session() as db:
        user = users.create(
            auth_session=auth,
            clinical_session=db,
            username=username,
            email=email,
            password=password,
            role=user_role,
            patient_id=patient_id,
            context=_context(),
        )
        commit_with_audit(auth_session=auth, clinical_session=db)
    err.print(f"created {user_role.value} {escape(user.username)}")
    typer.echo(str(user.id))


@user_app.command("list")
def user_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List users by username."""
    from medvault.auth import users

    with _runtime() as runtime, runtime.auth.read_session() as session:
        found = users.list_users(session=session)
    if as_json:
        for user in found:
            row = {
                "id": str(user.id),
                "username": user.username,
                "email": user.email,
                "role": user.role,
                "patient_id": str(user.patient_id) if user.patient_id else None,
                "disabled": user.disabled_at is not None,
            }
            typer.echo(json.dumps(row))
        return
    if not found:
        err.print("no users")
        return
    table = Table("Username", "Role", "Status", "Email", "Patient", "Id")
    for user in found:
        table.add_row(
            escape(user.username),
            user.role,
            "disabled" if user.disabled_at else "active",
            escape(user.email),
            str(user.patient_id or ""),
            str(user.id),
        )
    Console(width=200).print(table)


def _set_enabled(username: str, *, enabled: bool) -> None:
    from medvault.auth import users
    from medvault.auth.service import commit_with_audit

    change = users.enable if enabled else users.disable
    with _runtime() as runtime, runtime.auth.session() as auth, runtime.clinical.session() as db:
        user = users.get_by_username(session=auth, username=username)
        change(auth_session=auth, clinical_session=db, user_id=user.id, context=_context())
        commit_with_audit(auth_session=auth, clinical_session=db)
    err.print(f"{'enabled' if enabled else 'disabled'} {escape(user.username)}")


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument()]) -> None:
    """Lock a user out at once (their sessions end; access tokens stop working)."""
    _set_enabled(username, enabled=False)


@user_app.command("enable")
def user_enable(username: Annotated[str, typer.Argument()]) -> None:
    """Let a disabled user log in again."""
    _set_enabled(username, enabled=True)


@user_app.command("password")
def user_password(
    username: Annotated[str, typer.Argument()],
    password: Annotated[
        str | None,
        typer.Option("--password", envvar="MEDVAULT_NEW_USER_PASSWORD", show_default=False),
    ] = None,
) -> None:
    """Set a user's password (prompted unless given) and end all their sessions."""
    from medvault.auth import users
    from medvault.auth.service import commit_with_audit

    if password is None:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    with _runtime() as runtime, runtime.auth.session() as auth, runtime.clinical.session() as db:
        user = users.get_by_username(session=auth, username=username)
        users.change_password(
            auth_session=auth,
            clinical_session=db,
            user_id=user.id,
            new_password=password,
            context=_context(),
        )
        commit_with_audit(auth_session=auth, clinical_session=db)
    err.print(f"password changed for {escape(user.username)}; their sessions were ended")


# -- care teams ------------------------------------------------------------------------


ClinicianOption = Annotated[str, typer.Option("--clinician", help="The clinician's username")]
PatientOption = Annotated[str, typer.Option("--patient", help="Patient id")]


@careteam_app.command("add")
def careteam_add(clinician: ClinicianOption, patient: PatientOption) -> None:
    """Put a clinician on a patient's care team (opens the patient's records to them)."""
    from medvault.access import careteams
    from medvault.audit import service as audit
    from medvault.auth import users

    patient_id = _patient_id(patient)
    with (
        _runtime() as runtime,
        runtime.auth.read_session() as auth,
        runtime.clinical.session() as db,
    ):
        user = users.get_by_username(session=auth, username=clinician)
        _, created = careteams.add(
            clinical_session=db,
            auth_session=auth,
            clinician_id=user.id,
            patient_id=patient_id,
            context=_context(),
        )
        audit.commit_or_refuse(db)
    what = "added" if created else "already on the care team:"
    err.print(f"{what} {escape(user.username)} → patient {patient_id}")


@careteam_app.command("remove")
def careteam_remove(clinician: ClinicianOption, patient: PatientOption) -> None:
    """Take a clinician off a patient's care team."""
    from medvault.access import careteams
    from medvault.audit import service as audit
    from medvault.auth import users

    patient_id = _patient_id(patient)
    with (
        _runtime() as runtime,
        runtime.auth.read_session() as auth,
        runtime.clinical.session() as db,
    ):
        user = users.get_by_username(session=auth, username=clinician)
        careteams.remove(
            clinical_session=db, clinician_id=user.id, patient_id=patient_id, context=_context()
        )
        audit.commit_or_refuse(db)
    err.print(f"removed {escape(user.username)} from patient {patient_id}")


@careteam_app.command("list")
def careteam_list(
    patient: Annotated[str | None, typer.Option("--patient", help="Only this patient")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List care-team memberships."""
    from medvault.access import careteams

    patient_id = _patient_id(patient) if patient else None
    with (
        _runtime() as runtime,
        runtime.auth.read_session() as auth,
        runtime.clinical.read_session() as db,
    ):
        entries = careteams.list_members(
            clinical_session=db, auth_session=auth, patient_id=patient_id
        )
    if as_json:
        for entry in entries:
            row = {
                "patient_id": str(entry.patient_id),
                "clinician_id": str(entry.clinician_id),
                "clinician": entry.clinician_username,
                "added_at": entry.added_at.isoformat(),
                "added_by": entry.added_by,
            }
            typer.echo(json.dumps(row))
        return
    if not entries:
        err.print("no care-team members")
        return
    table = Table("Patient", "Clinician", "Added (UTC)", "Added by")
    for entry in entries:
        table.add_row(
            str(entry.patient_id),
            escape(entry.clinician_username or str(entry.clinician_id)),
            f"{entry.added_at:%Y-%m-%d %H:%M}",
            escape(entry.added_by),
        )
    Console(width=200).print(table)
