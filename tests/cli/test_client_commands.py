"""The client commands over real HTTP: the CLI against the app under uvicorn."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from medvault.auth.service import authenticate_token
from medvault.runtime import Runtime
from tests.cli.server_env import server_env
from tests.cli.support import add_patient, assert_clean_failure, run
from tests.support.backends import Backend
from tests.support.factories import NHS_SYSTEM, pdf_bytes
from tests.support.live_server import LiveServer
from tests.support.services import free_port

MiB = 1024 * 1024


@pytest.fixture
def live(app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def env(live: LiveServer, api_token: str) -> dict[str, str]:
    # pytest-xdist sets COLUMNS=80 in its workers; tables as a script would see them.
    return {"MEDVAULT_URL": live.url, "MEDVAULT_TOKEN": api_token, "COLUMNS": "200"}


def test_patient_upload_list_get_delete(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient_id = add_patient(env)
    content = pdf_bytes(3 * MiB + 12_345)  # four 1 MiB chunks on the wire
    source = tmp_path / "Röntgen Befund.pdf"
    source.write_bytes(content)

    uploaded = run(
        "upload",
        str(source),
        "--patient",
        patient_id,
        "--type",
        "18748-4",
        "--title",
        "Chest X-ray report",
        "--classification",
        "restricted",
        env=env,
    )
    assert uploaded.exit_code == 0, uploaded.output
    document_id = str(uuid.UUID(uploaded.stdout.strip()))

    listed = run("ls", "--patient", patient_id, env=env)
    assert listed.exit_code == 0, listed.output
    assert document_id in listed.stdout
    assert "Chest X-ray report" in listed.stdout
    assert "18748-4" in listed.stdout
    assert "3.0 MiB" in listed.stdout

    as_json = run("ls", "--patient", patient_id, "--json", env=env)
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["id"], r["size"], r["classification"]) for r in rows] == [
        (document_id, len(content), "restricted")
    ]

    workdir = tmp_path / "downloads"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    fetched = run("get", document_id, env=env)
    assert fetched.exit_code == 0, fetched.output
    written = workdir / "Röntgen Befund.pdf"  # the server's name, from filename*
    assert fetched.stdout.strip() == str(written)
    assert written.read_bytes() == content
    assert sorted(p.name for p in workdir.iterdir()) == [written.name]  # no temp files left

    again = run("get", document_id, env=env)
    assert_clean_failure(again, "already exists", "--force")
    forced = run("get", document_id, "--force", "-o", str(written), env=env)
    assert forced.exit_code == 0, forced.output
    assert written.read_bytes() == content

    removed = run("rm", document_id, "--reason", "uploaded to the wrong patient", env=env)
    assert removed.exit_code == 0, removed.output

    target = tmp_path / "after-delete.pdf"
    gone = run("get", document_id, "-o", str(target), env=env)
    assert_clean_failure(gone, "deleted")
    assert not target.exists()
    assert run("ls", "--patient", patient_id, "--json", env=env).stdout == ""


def test_upload_rejection_is_a_message(env: dict[str, str], tmp_path: Path) -> None:
    patient_id = add_patient(env)
    source = tmp_path / "notes.txt"
    source.write_bytes(b"plain text is not an accepted clinical document type\n" * 1000)
    result = run("upload", str(source), "--patient", patient_id, "--type", "11502-2", env=env)
    assert_clean_failure(result, "not accepted", "application/pdf")

    bad_type = run("upload", str(source), "--patient", patient_id, "--type", "not-loinc", env=env)
    assert_clean_failure(bad_type, "document_type")


def test_duplicate_patient_is_a_message(env: dict[str, str]) -> None:
    args = (
        "patient",
        "add",
        "--system",
        NHS_SYSTEM,
        "--value",
        "9000000009",
        "--family",
        "A",
        "--given",
        "B",
        "--birth-date",
        "1970-01-01",
    )
    assert run(*args, env=env).exit_code == 0
    assert_clean_failure(run(*args, env=env), "A patient with this identifier exists")


def test_bad_token_is_refused_clearly(env: dict[str, str], tmp_path: Path) -> None:
    bad = {**env, "MEDVAULT_TOKEN": "mv_" + "x" * 40}
    assert_clean_failure(run("ls", env=bad), "Authentication required", "token")

    # The server refuses before reading the body; the client must still show the 401.
    source = tmp_path / "big.pdf"
    source.write_bytes(pdf_bytes(3 * MiB))
    upload = run(
        "upload", str(source), "--patient", str(uuid.uuid4()), "--type", "11502-2", env=bad
    )
    assert_clean_failure(upload, "Authentication required")


def test_missing_token_and_unreachable_vault(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    missing = run("ls", env={"MEDVAULT_URL": url, "MEDVAULT_TOKEN": ""})
    assert missing.exit_code == 2
    assert "MEDVAULT_TOKEN" in missing.stderr

    refused = run("ls", env={"MEDVAULT_URL": url, "MEDVAULT_TOKEN": "mv_whatever"})
    assert_clean_failure(refused, "Cannot connect", url)


def test_token_create_prints_only_the_token(
    backend: Backend, runtime: Runtime, live: LiveServer
) -> None:
    result = run("token", "create", "--name", "ci robot", env=server_env(backend.settings))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    token = lines[0]
    with runtime.auth.session() as session:
        principal = authenticate_token(session=session, token=token)
    assert principal is not None and principal.name == "ci robot"
    # And it works against the running vault.
    listed = run("ls", "--json", env={"MEDVAULT_URL": live.url, "MEDVAULT_TOKEN": token})
    assert listed.exit_code == 0, listed.output


def test_get_into_a_missing_folder_is_a_message(env: dict[str, str], tmp_path: Path) -> None:
    patient_id = add_patient(env)
    source = tmp_path / "a.pdf"
    source.write_bytes(pdf_bytes(2000))
    document_id = run(
        "upload", str(source), "--patient", patient_id, "--type", "11502-2", env=env
    ).stdout.strip()
    result = run("get", document_id, "-o", str(tmp_path / "no" / "such" / "a.pdf"), env=env)
    assert_clean_failure(result, "Cannot write")
