"""``medvault upload`` through tus: Ctrl-C, ``--resume``, and the state file it keeps."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from medvault.cli.resumable_upload import default_state_path
from medvault.client import VaultClient, VaultError
from medvault.client import resumable as sdk
from tests.cli.support import add_patient, assert_clean_failure, run
from tests.cli.tus_wire import TusWire, WireLog
from tests.support.factories import pdf_bytes
from tests.support.live_server import LiveServer

MiB = 1024 * 1024
# `python -m medvault.cli`, with Ctrl-C's default: a shell that starts the suite in the
# background lets its children inherit SIGINT ignored, and then Python keeps it so.
INTERRUPTIBLE_CLI = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'medvault'; runpy.run_module('medvault.cli', run_name='__main__')"
)


@pytest.fixture
def wire(app: FastAPI) -> WireLog:
    log = WireLog()
    app.add_middleware(TusWire, log=log)
    return log


@pytest.fixture
def live(app: FastAPI, wire: WireLog) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def env(live: LiveServer, api_token: str, tmp_path: Path) -> dict[str, str]:
    return {
        "MEDVAULT_URL": live.url,
        "MEDVAULT_TOKEN": api_token,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }


def _state(env: dict[str, str]) -> dict[str, dict[str, object]]:
    path = Path(env["XDG_CACHE_HOME"]) / "medvault" / "uploads.json"
    if not path.exists():
        return {}
    uploads: dict[str, dict[str, object]] = json.loads(path.read_text())["uploads"]
    return uploads


def _stored_bytes(env: dict[str, str], document_id: str) -> bytes:
    buffer = io.BytesIO()
    with VaultClient(env["MEDVAULT_URL"], env["MEDVAULT_TOKEN"]) as vault:
        vault.download(document_id, buffer)
    return buffer.getvalue()


def test_ctrl_c_then_resume_sends_only_the_rest(
    env: dict[str, str], wire: WireLog, tmp_path: Path
) -> None:
    patient_id = add_patient(env)
    content = pdf_bytes(3 * MiB + 123)
    source = tmp_path / "Befund Müller.pdf"
    source.write_bytes(content)
    args = ["upload", str(source), "--patient", patient_id, "--type", "11502-2"]
    args += ["--title", "Befund", "--resumable", "--chunk-size", "1"]

    # A real process and a real SIGINT, while its second PATCH is on the way.
    wire.hold_patch = 2
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVAULT_")}
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE_CLI, *args],
        env={**child_env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wire.held.wait(60), "the CLI never sent a second PATCH"
        process.send_signal(signal.SIGINT)
        out, errors = process.communicate(timeout=60)
    finally:
        process.kill()
        wire.release.set()
    assert process.returncode == 130, errors.decode()
    assert out == b""
    assert b"--resume" in errors and b"Traceback" not in errors
    assert wire.patches()[-1].done.wait(30)  # the held request is over (and kept nothing)

    # The state file: 0600 in a 0700 folder, with the upload's URL and nothing else.
    state_path = Path(env["XDG_CACHE_HOME"]) / "medvault" / "uploads.json"
    assert stat.S_IMODE(state_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_path.parent.stat().st_mode) == 0o700
    text = state_path.read_text()
    token = env["MEDVAULT_TOKEN"]
    for secret in (token, token[-20:], "Müller", "Befund", patient_id):
        assert secret not in text
    [entry] = _state(env).values()
    url = str(entry["url"])
    with VaultClient(env["MEDVAULT_URL"], token) as vault:
        offset = vault.resumable_status(url).offset
    assert 0 < offset < len(content) and offset % MiB == 0

    before = len(wire.exchanges)
    resumed = run(*args, "--resume", env=env)
    assert resumed.exit_code == 0, resumed.output
    document_id = resumed.stdout.strip()
    assert f"resuming at {offset // MiB}.0 MiB of 3.0 MiB" in resumed.stderr
    assert "POST" not in wire.methods(before)
    sent = [p for p in wire.patches(before) if p.status == 204]
    assert sent[0].offset == offset  # it went on where the server stood...
    assert sum(p.received for p in sent) == len(content) - offset  # ...and sent only the rest
    assert _stored_bytes(env, document_id) == content
    assert _state(env) == {}  # forgotten once done


def _interrupt_after_first_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C as the second chunk is about to go (in-process: KeyboardInterrupt)."""
    original = sdk._range_digest
    calls = 0

    def digest(pieces: Iterator[bytes]) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return original(pieces)

    monkeypatch.setattr(sdk, "_range_digest", digest)


def test_without_resume_a_known_upload_is_named_and_replaced(
    env: dict[str, str], wire: WireLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient_id = add_patient(env)
    content = pdf_bytes(2 * MiB + 5)
    source = tmp_path / "scan.pdf"
    source.write_bytes(content)
    args = ["upload", str(source), "--patient", patient_id, "--type", "11502-2"]
    args += ["--resumable", "--chunk-size", "1"]

    _interrupt_after_first_chunk(monkeypatch)
    interrupted = run(*args, env=env)
    assert interrupted.exit_code == 130, interrupted.output
    assert "--resume" in interrupted.stderr
    monkeypatch.undo()
    [entry] = _state(env).values()
    earlier = str(entry["url"])

    again = run(*args, env=env)
    assert again.exit_code == 0, again.output
    assert "did not finish" in again.stderr and "--resume" in again.stderr
    assert wire.methods().count("POST") == 2  # a new upload...
    with VaultClient(env["MEDVAULT_URL"], env["MEDVAULT_TOKEN"]) as vault:
        with pytest.raises(VaultError) as gone:
            vault.resumable_status(earlier)
        assert gone.value.status == 404  # ...and the earlier one discarded on the server
    assert _stored_bytes(env, again.stdout.strip()) == content
    assert _state(env) == {}


def test_resume_with_nothing_to_resume_starts_afresh(env: dict[str, str], tmp_path: Path) -> None:
    patient_id = add_patient(env)
    source = tmp_path / "a.pdf"
    source.write_bytes(pdf_bytes(100_000))
    args = ["upload", str(source), "--patient", patient_id, "--type", "11502-2"]

    result = run(*args, "--resume", env=env)
    assert result.exit_code == 0, result.output
    assert "No unfinished upload" in result.stderr
    assert _stored_bytes(env, result.stdout.strip()) == source.read_bytes()

    clash = run(*args, "--resume", "--no-resumable", env=env)
    assert clash.exit_code == 2 and "--no-resumable" in clash.stderr


def test_small_files_go_in_one_request_unless_asked(
    env: dict[str, str], wire: WireLog, tmp_path: Path
) -> None:
    patient_id = add_patient(env)
    source = tmp_path / "a.pdf"
    source.write_bytes(pdf_bytes(100_000))
    result = run("upload", str(source), "--patient", patient_id, "--type", "11502-2", env=env)
    assert result.exit_code == 0, result.output
    assert wire.exchanges == []


def test_a_refused_resumable_upload_is_a_message_and_forgotten(
    env: dict[str, str], tmp_path: Path
) -> None:
    patient_id = add_patient(env)
    source = tmp_path / "notes.txt"
    source.write_bytes(b"plain text is not an accepted clinical document type\n" * 40_000)
    result = run(
        "upload", str(source), "--patient", patient_id, "--type", "11502-2", "--resumable",
        env=env,
    )  # fmt: skip
    assert_clean_failure(result, "not accepted")
    assert "--resume" not in result.stderr  # the server refused it for good
    assert _state(env) == {}


def test_the_state_file_lives_in_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/someone")
    assert default_state_path() == Path("/var/cache/someone/medvault/uploads.json")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", "/home/someone")
    assert default_state_path() == Path("/home/someone/.cache/medvault/uploads.json")
