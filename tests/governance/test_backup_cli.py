"""The real commands, as an operator runs them: ``medvault backup``, ``backup keys``,
``backup verify``, ``restore --verify``, then ``verify --all`` and ``audit verify``.

Each command is its own ``python -m medvault.cli`` process, configured only through
``MEDVAULT_*`` variables, on both backends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medvault.audit.sealer import seal_pending
from medvault.config import Settings
from medvault.governance.backup.manifest import read_manifest
from medvault.runtime import Runtime
from tests.cli.server_env import server_env
from tests.governance.backup_support import fresh_target, upload
from tests.support.backends import Backend
from tests.support.factories import create_patient
from tests.support.services import PostgresDatabases


def medvault(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEDVAULT_")}
    env.update(server_env(settings), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "medvault.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def target(
    backend: Backend, tmp_path: Path, pg_databases: PostgresDatabases | None
) -> Iterator[Settings]:
    with fresh_target(backend.settings, tmp_path, pg_databases) as settings:
        yield settings


def test_backup_keys_restore_and_verify_from_the_command_line(
    backend: Backend, runtime: Runtime, client: TestClient, target: Settings, tmp_path: Path
) -> None:
    patient = create_patient(client)
    for _ in range(4):
        upload(client, patient)
    seal_pending(runtime=runtime)
    source = backend.settings
    backups, keys = tmp_path / "backups", tmp_path / "keys"

    made = medvault(source, "backup", str(backups))
    assert made.returncode == 0, made.stderr
    backup = Path(made.stdout.strip())
    assert backup.parent == backups.resolve() and backup.is_dir()
    assert "blobs: " in made.stderr and "0 linked" in made.stderr
    # Nothing that looks like a key is in the backup.
    names = {path.name for path in backup.rglob("*")}
    assert not names & {"keyring.json", "secret.key", "jwt-signing.pem", "audit-signing.pem"}

    again = medvault(source, "backup", "create", str(backups))
    assert again.returncode == 0, again.stderr
    assert f"0 copied, {read_manifest(backup).blob_stats.count} linked" in again.stderr

    refused = medvault(source, "backup", "keys", str(backup / "keys"))
    assert refused.returncode == 1 and "must not sit with the data" in refused.stderr
    exported = medvault(source, "backup", "keys", str(keys))
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.name for p in keys.iterdir()) == [
        "audit-signing.pem",
        "jwt-signing.pem",
        "keyring.json",
        "secret.key",
    ]
    assert all(p.stat().st_mode & 0o077 == 0 for p in keys.iterdir())

    checked = medvault(source, "backup", "verify", str(backup))
    assert checked.returncode == 0 and checked.stdout.startswith("OK: "), checked.stdout

    # --verify without the keys in place is refused before anything is restored.
    no_keys = medvault(target, "restore", str(backup), "--verify")
    assert no_keys.returncode == 2 and "No keyring" in no_keys.stderr
    target.resolved_data_dir.mkdir(parents=True, mode=0o700)
    for path in keys.iterdir():
        shutil.copy2(path, target.resolved_data_dir / path.name)

    restored = medvault(target, "restore", str(backup), "--verify")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "OK: the restore is proven" in restored.stdout
    assert "matches and its signature verifies" in restored.stdout

    twice = medvault(target, "restore", str(backup))
    assert twice.returncode == 1
    assert "Restore refused; nothing was changed" in twice.stderr
    assert "is not empty" in twice.stderr

    for command in (("verify", "--all"), ("audit", "verify"), ("backup", "verify", str(backup))):
        done = medvault(target, *command, *(["--restored"] if command[0] == "backup" else []))
        assert done.returncode == 0, (command, done.stdout, done.stderr)
