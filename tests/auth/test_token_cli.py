"""API tokens from the CLI: scoped, expiring, listed and revoked."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medvault.cli.app import app as cli
from medvault.runtime import Runtime
from tests.cli.server_env import server_env
from tests.support.factories import patient_payload


def test_scoped_token_list_and_revoke(runtime: Runtime, anon_client: TestClient) -> None:
    env = {**server_env(runtime.settings), "COLUMNS": "200"}
    runner = CliRunner()
    made = runner.invoke(
        cli,
        [
            "token",
            "create",
            "--name",
            "reader",
            "--scope",
            "documents:read",
            "--expires-in-days",
            "30",
        ],
        env=env,
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith("mvt_") and "\n" not in token
    auth = {"Authorization": f"Bearer {token}"}
    assert anon_client.get("/api/v1/documents", headers=auth).status_code == 200
    refused = anon_client.post("/api/v1/patients", headers=auth, json=patient_payload())
    assert refused.status_code == 403

    listed = runner.invoke(cli, ["token", "list"], env=env)
    assert listed.exit_code == 0 and "reader" in listed.stdout and token not in listed.stdout
    token_id = next(
        line.split("│")[1].strip() for line in listed.stdout.splitlines() if "reader" in line
    )
    revoked = runner.invoke(cli, ["token", "revoke", token_id], env=env)
    assert revoked.exit_code == 0, revoked.output
    assert anon_client.get("/api/v1/documents", headers=auth).status_code == 401

    bad = runner.invoke(cli, ["token", "create", "--name", "x", "--scope", "everything"], env=env)
    assert bad.exit_code == 2 and "unknown scopes" in bad.output
