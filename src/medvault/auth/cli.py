"""Server-side ``medvault user …`` and ``medvault token …`` commands.

They open the vault's databases directly, so they run where the vault's configuration
is, and act as the audit actor ``system:cli``.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medvault.cli.console import (
    admin_runtime,
    cli_audit_context,
    err,
    fail,
    id_argument,
    open_runtime,
)
from medvault.config import Settings
from medvault.kit.clock import utcnow

user_app = typer.Typer(no_args_is_help=True, help="User accounts (server side).")
token_app = typer.Typer(no_args_is_help=True, help="API tokens.")


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
        fail(f"Unknown role {role!r}: use admin, clinician, patient or auditor.", code=2)
    patient_id = id_argument(patient, kind="patient") if patient else None
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with (
        admin_runtime() as runtime,
        runtime.auth.session() as auth,
        runtime.clinical.session() as db,
    ):
        user = users.create(
            auth_session=auth,
            clinical_session=db,
            username=username,
            email=email,
            password=password,
            role=user_role,
            patient_id=patient_id,
            context=cli_audit_context(),
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

    with admin_runtime() as runtime, runtime.auth.read_session() as session:
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
    with (
        admin_runtime() as runtime,
        runtime.auth.session() as auth,
        runtime.clinical.session() as db,
    ):
        user = users.get_by_username(session=auth, username=username)
        change(auth_session=auth, clinical_session=db, user_id=user.id, context=cli_audit_context())
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
    with (
        admin_runtime() as runtime,
        runtime.auth.session() as auth,
        runtime.clinical.session() as db,
    ):
        user = users.get_by_username(session=auth, username=username)
        users.change_password(
            auth_session=auth,
            clinical_session=db,
            user_id=user.id,
            new_password=password,
            context=cli_audit_context(),
        )
        commit_with_audit(auth_session=auth, clinical_session=db)
    err.print(f"password changed for {escape(user.username)}; their sessions were ended")


# -- API tokens ------------------------------------------------------------------------


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

    runtime = open_runtime(Settings(), run_migrations=True)
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
        fail(str(exc), code=2)
    finally:
        runtime.close()
    typer.echo(issued.token)


@token_app.command("list")
def token_list() -> None:
    """List API tokens: id, name, scopes, expiry and whether revoked (never the token)."""
    from medvault.auth.service import list_api_tokens

    runtime = open_runtime(Settings(), run_migrations=False)
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
        fail("That is not a token id; see `medvault token list`.", code=2)
    runtime = open_runtime(Settings(), run_migrations=False)
    try:
        with runtime.auth.session() as session:
            found = revoke_api_token(session=session, token_id=parsed)
            session.commit()
    finally:
        runtime.close()
    if not found:
        fail("No token with that id.")
    err.print(f"revoked token {parsed}")
