"""``medvault user …``: server-side, audited as system:cli."""

from __future__ import annotations

import json
import uuid

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from medvault.auth.cli import user_app
from medvault.runtime import Runtime
from tests.cli.server_env import server_env
from tests.support.factories import create_patient
from tests.support.inspect import audit_rows
from tests.support.users import login

cli = typer.Typer()
cli.add_typer(user_app, name="user")


@pytest.fixture
def env(runtime: Runtime) -> dict[str, str]:
    return server_env(runtime.settings)


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


def add_user(env: dict[str, str], username: str, *extra: str, password: str) -> Result:
    return run(
        {**env, "MEDVAULT_NEW_USER_PASSWORD": password},
        "user",
        "add",
        username,
        "--email",
        f"{username}@hospital.example",
        *extra,
    )


def test_user_add_list_disable_enable(
    env: dict[str, str], runtime: Runtime, anon_client: TestClient
) -> None:
    added = add_user(env, "dr-grey", "--role", "clinician", password="grey-matter-passphrase")
    assert added.exit_code == 0, added.output
    user_id = added.stdout.strip()
    assert uuid.UUID(user_id) and "created clinician dr-grey" in added.stderr

    listed = run(env, "user", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["username"], r["role"], r["disabled"]) for r in rows] == [
        ("dr-grey", "clinician", False)
    ]
    table = run(env, "user", "list")
    assert "dr-grey" in table.stdout and "active" in table.stdout

    assert login(anon_client, "dr-grey", "grey-matter-passphrase").status_code == 200
    assert run(env, "user", "disable", "dr-grey").exit_code == 0
    assert login(anon_client, "dr-grey", "grey-matter-passphrase").status_code == 401
    assert json.loads(run(env, "user", "list", "--json").stdout)["disabled"] is True
    assert run(env, "user", "enable", "dr-grey").exit_code == 0
    assert login(anon_client, "dr-grey", "grey-matter-passphrase").status_code == 200

    events = audit_rows(runtime, "user.create", "user.disable", "user.enable")
    assert [e.action for e in events] == ["user.create", "user.disable", "user.enable"]
    assert {e.actor_id for e in events} == {"system:cli"}
    assert str(events[0].resource_id) == user_id


def test_user_add_prompts_for_the_password(env: dict[str, str], anon_client: TestClient) -> None:
    mismatch = run(
        env,
        "user",
        "add",
        "prompted",
        "--email",
        "p@hospital.example",
        "--role",
        "auditor",
        stdin="first-passphrase-x\nsecond-passphrase\nfirst-passphrase-x\nfirst-passphrase-x\n",
    )
    assert mismatch.exit_code == 0, mismatch.output
    assert "first-passphrase-x" not in mismatch.output  # hidden input
    assert login(anon_client, "prompted", "first-passphrase-x").status_code == 200


def test_user_add_errors_are_messages(env: dict[str, str]) -> None:
    bad_role = add_user(env, "someone", "--role", "wizard", password="long-enough-password")
    assert bad_role.exit_code == 2 and "Unknown role" in bad_role.stderr
    short = add_user(env, "someone", "--role", "clinician", password="short")
    assert short.exit_code == 1 and "at least 12" in short.stderr
    assert "Traceback" not in short.output and short.stdout == ""
    missing_patient = add_user(env, "pat", "--role", "patient", password="long-enough-password")
    assert missing_patient.exit_code == 1 and "patient id" in missing_patient.stderr
    ghost = add_user(
        env,
        "pat",
        "--role",
        "patient",
        "--patient",
        str(uuid.uuid4()),
        password="long-enough-password",
    )
    assert ghost.exit_code == 1 and "No patient" in ghost.stderr
    assert add_user(env, "dup", "--role", "auditor", password="long-enough-password").exit_code == 0
    dup = add_user(env, "dup", "--role", "auditor", password="long-enough-password")
    assert dup.exit_code == 1 and "taken" in dup.stderr
    assert run(env, "user", "disable", "nobody").exit_code == 1
    assert run(env, "user", "list", "--json").stdout.count("\n") == 1


def test_patient_user(env: dict[str, str], client: TestClient, anon_client: TestClient) -> None:
    patient = create_patient(client)
    added = add_user(
        env, "pat-1", "--role", "patient", "--patient", patient, password="patient-passphrase"
    )
    assert added.exit_code == 0, added.output
    token = login(anon_client, "pat-1", "patient-passphrase").json()["access_token"]
    me = anon_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["patient_id"] == patient


def test_user_password(env: dict[str, str], anon_client: TestClient) -> None:
    add_user(env, "forgetful", "--role", "auditor", password="old-passphrase-1")
    changed = run(
        {**env, "MEDVAULT_NEW_USER_PASSWORD": "new-passphrase-2"}, "user", "password", "forgetful"
    )
    assert changed.exit_code == 0, changed.output
    assert login(anon_client, "forgetful", "old-passphrase-1").status_code == 401
    assert login(anon_client, "forgetful", "new-passphrase-2").status_code == 200
