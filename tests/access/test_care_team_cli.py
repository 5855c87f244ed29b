"""``medvault careteam …``: server-side, audited as system:cli."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from medvault.cli.app import app as cli
from medvault.runtime import Runtime
from tests.cli.server_env import server_env
from tests.support.factories import create_patient
from tests.support.inspect import audit_rows


@pytest.fixture
def env(runtime: Runtime) -> dict[str, str]:
    return server_env(runtime.settings)


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def add_clinician(env: dict[str, str], username: str, password: str) -> None:
    added = run(
        {**env, "MEDVAULT_NEW_USER_PASSWORD": password},
        "user",
        "add",
        username,
        "--email",
        f"{username}@hospital.example",
        "--role",
        "clinician",
    )
    assert added.exit_code == 0, added.output


def test_careteam_add_list_remove(
    env: dict[str, str], runtime: Runtime, client: TestClient
) -> None:
    patient = create_patient(client)
    add_clinician(env, "dr-house", "vicodin-passphrase")

    added = run(env, "careteam", "add", "--clinician", "dr-house", "--patient", patient)
    assert added.exit_code == 0, added.output
    again = run(env, "careteam", "add", "--clinician", "dr-house", "--patient", patient)
    assert again.exit_code == 0 and "already" in again.stderr

    listed = run(env, "careteam", "list", "--patient", patient, "--json")
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["clinician"] == "dr-house" and row["patient_id"] == patient
    assert row["added_by"] == "system:cli"
    assert "dr-house" in run(env, "careteam", "list").stdout
    other = create_patient(client)
    assert run(env, "careteam", "list", "--patient", other, "--json").stdout == ""

    removed = run(env, "careteam", "remove", "--clinician", "dr-house", "--patient", patient)
    assert removed.exit_code == 0, removed.output
    assert run(env, "careteam", "list", "--json").stdout == ""
    not_member = run(env, "careteam", "remove", "--clinician", "dr-house", "--patient", patient)
    assert not_member.exit_code == 1 and "not on this patient's care team" in not_member.stderr
    assert run(env, "careteam", "add", "--clinician", "dr-house", "--patient", "x").exit_code == 2
    assert run(env, "careteam", "add", "--clinician", "nobody", "--patient", patient).exit_code == 1

    events = audit_rows(runtime, "careteam.add", "careteam.remove")
    assert [(e.action, e.actor_id) for e in events] == [
        ("careteam.add", "system:cli"),
        ("careteam.remove", "system:cli"),
    ]
