"""Every file the vault writes is owner-only, even in a 0755 data folder (issue 9, defect 11).

Before the fix, SQLite created ``auth.db`` (password and token hashes) and
``clinical.db`` with 0644 inside an operator's 0755 folder: readable by every local
user. The in-process test runs under a permissive umask (022) so that only the
explicit modes can pass it; the ``serve`` test checks the real command end to end.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from medvault.app import create_app
from medvault.auth.service import create_api_token
from medvault.config import Settings
from medvault.runtime import build_runtime
from tests.support.factories import patient_payload, pdf_bytes
from tests.support.vault_process import VaultProcess


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def loose_entries(root: Path) -> list[str]:
    """Everything under ``root`` (not root itself) that is not 0600 / 0700."""
    loose = []
    for path in sorted(root.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            loose.append(f"{path.relative_to(root)}: {mode:04o}")
    return loose


def open_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)  # as `mkdir` under a usual umask, or an operator's install script
    return data


def test_files_created_in_a_0755_data_dir_are_owner_only(
    tmp_path: Path, permissive_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    data = open_data_dir(tmp_path)
    caplog.set_level(logging.WARNING, logger="medvault.runtime")
    runtime = build_runtime(Settings(env="test", data_dir=data), run_migrations=True)
    try:
        with runtime.auth.session() as session:
            token = create_api_token(session=session, name="perms").token
            session.commit()
        with TestClient(create_app(runtime=runtime)) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            patient = client.post("/api/v1/patients", json=patient_payload()).json()["id"]
            uploaded = client.post(
                "/api/v1/documents",
                params={"patient_id": patient, "document_type": "11502-2", "filename": "a.pdf"},
                content=pdf_bytes(),
                headers={"content-type": "application/pdf"},
            )
            assert uploaded.status_code == 201, uploaded.text
            assert (
                client.get(f"/api/v1/documents/{uploaded.json()['id']}/content").status_code == 200
            )
            # While it runs: the journals exist now, and vanish at a clean shutdown.
            names = {path.name for path in data.rglob("*")}
            assert {
                "auth.db",
                "clinical.db",
                "patients.db",
                "auth.db-wal",
                "clinical.db-shm",
            } <= names
            assert any(path.is_file() for path in (data / "blobs").rglob("*"))
            assert loose_entries(data) == []
        assert loose_entries(data) == []
    finally:
        runtime.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(data) in message and "0755" in message for message in warnings), warnings


def test_serve_in_a_0755_data_dir_warns_and_writes_owner_only(tmp_path: Path) -> None:
    data = open_data_dir(tmp_path)
    vault = VaultProcess(data, log_path=tmp_path / "serve.log")
    with vault:
        token = vault.create_token("perms")
        with httpx.Client(
            base_url=vault.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            patient = client.post("/api/v1/patients", json=patient_payload()).json()["id"]
            uploaded = client.post(
                "/api/v1/documents",
                params={"patient_id": patient, "document_type": "11502-2", "filename": "a.pdf"},
                content=pdf_bytes(),
                headers={"content-type": "application/pdf"},
            )
            assert uploaded.status_code == 201, uploaded.text
        assert "clinical.db-wal" in {path.name for path in data.rglob("*")}
        assert loose_entries(data) == []
    log = vault.log_tail(10**6)
    assert "warning:" in log and "0755" in log
