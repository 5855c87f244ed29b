"""Settings: defaults, env parsing, and production's refusal of default secrets."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.pool import QueuePool

from medvault.config import ConfigurationError, Settings
from medvault.crypto.keyring import Keyring
from medvault.crypto.signing_keys import generate_pem
from medvault.db.engine import SQLITE_POOL_SIZE
from medvault.runtime import build_runtime
from tests.support.backends import SettingsFactory


def test_defaults_are_the_embedded_vault(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.clinical_database_url == f"sqlite:///{tmp_path.resolve()}/clinical.db"
    assert settings.auth_db_url == f"sqlite:///{tmp_path.resolve()}/auth.db"
    assert settings.patient_db_url == f"sqlite:///{tmp_path.resolve()}/patients.db"
    assert settings.blob_storage_url == (tmp_path.resolve() / "blobs").as_uri()
    assert settings.max_upload_bytes == 50 * 1024 * 1024
    assert set(settings.allowed_types) == {
        "application/pdf",
        "image/jpeg",
        "image/png",
        "image/tiff",
        "application/dicom",
    }


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDVAULT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDVAULT_ALLOWED_TYPES", "application/pdf, IMAGE/PNG")
    monkeypatch.setenv("MEDVAULT_MAX_UPLOAD_BYTES", "1024")
    monkeypatch.setenv("MEDVAULT_STORAGE_URL", "s3://bucket/prefix")
    settings = Settings()
    assert settings.allowed_types == ("application/pdf", "image/png")
    assert settings.max_upload_bytes == 1024
    assert settings.blob_storage_url == "s3://bucket/prefix"


def test_first_start_generates_keys_privately(tmp_path: Path) -> None:
    runtime = build_runtime(Settings(data_dir=tmp_path / "d"), run_migrations=True)
    runtime.close()
    for name in ("keyring.json", "secret.key"):
        assert (tmp_path / "d" / name).stat().st_mode & 0o077 == 0
    again = build_runtime(Settings(data_dir=tmp_path / "d"))
    assert again.keyring.active_id == runtime.keyring.active_id
    assert again.secret_key == runtime.secret_key
    again.close()


@pytest.mark.parametrize("secret", [None, "", "changeme", "short-but-random"])
def test_production_refuses_missing_or_default_secrets(tmp_path: Path, secret: str | None) -> None:
    settings = Settings(
        env="production",
        data_dir=tmp_path,
        secret_key=secret,
        keyring=Keyring.generate().to_json(),
        database_url="sqlite:///x.db",
        auth_database_url="sqlite:///y.db",
    )
    with pytest.raises(ConfigurationError, match="MEDVAULT_SECRET_KEY"):
        build_runtime(settings)
    assert not (tmp_path / "secret.key").exists()


def test_production_refuses_a_generated_keyring(tmp_path: Path) -> None:
    settings = Settings(
        env="production",
        data_dir=tmp_path,
        secret_key="s" * 48,
        database_url="sqlite:///x.db",
        auth_database_url="sqlite:///y.db",
    )
    with pytest.raises(ConfigurationError, match="MEDVAULT_KEYRING"):
        build_runtime(settings)
    assert not (tmp_path / "keyring.json").exists()


def test_production_needs_explicit_databases(tmp_path: Path) -> None:
    settings = Settings(
        env="production",
        data_dir=tmp_path,
        secret_key="s" * 48,
        keyring=Keyring.generate().to_json(),
    )
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        build_runtime(settings)
    # The clinical and auth databases alone are not enough: demographics need theirs.
    two = settings.model_copy(
        update={"database_url": "sqlite:///x.db", "auth_database_url": "sqlite:///y.db"}
    )
    with pytest.raises(ConfigurationError, match="MEDVAULT_PATIENT_DATABASE_URL"):
        build_runtime(two)


def test_production_requires_managed_signing_keys(tmp_path: Path) -> None:
    settings = Settings(
        env="production",
        data_dir=tmp_path,
        secret_key="s" * 48,
        keyring=Keyring.generate().to_json(),
        database_url="sqlite:///x.db",
        auth_database_url="sqlite:///y.db",
    )
    with pytest.raises(ConfigurationError) as refused:
        build_runtime(settings)
    assert "MEDVAULT_JWT_PRIVATE_KEY" in str(refused.value)
    assert "MEDVAULT_AUDIT_SIGNING_KEY" in str(refused.value)
    assert not list(tmp_path.glob("*.pem"))


def test_production_starts_with_managed_secrets(tmp_path: Path) -> None:
    settings = Settings(
        jwt_private_key=generate_pem().decode(),
        audit_signing_key=generate_pem().decode(),
        env="production",
        data_dir=tmp_path,
        secret_key="s" * 48,
        keyring=Keyring.generate().to_json(),
        database_url=f"sqlite:///{tmp_path}/c.db",
        auth_database_url=f"sqlite:///{tmp_path}/a.db",
        patient_database_url=f"sqlite:///{tmp_path}/p.db",
        storage_url=(tmp_path / "blobs").as_uri(),
    )
    runtime = build_runtime(settings, run_migrations=True)
    assert runtime.secret_key == b"s" * 48
    runtime.close()


def test_download_ttl_cannot_exceed_the_maximum() -> None:
    with pytest.raises(ValueError):
        Settings(download_url_ttl_seconds=7200, download_url_max_ttl_seconds=3600)


def test_production_treats_empty_database_urls_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDVAULT_DATABASE_URL", "")
    monkeypatch.setenv("MEDVAULT_AUTH_DATABASE_URL", " ")
    settings = Settings(
        env="production",
        data_dir=tmp_path,
        secret_key="s" * 48,
        keyring=Keyring.generate().to_json(),
    )
    assert settings.database_url is None
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        build_runtime(settings)


def test_processes_starting_together_agree_on_generated_keys(tmp_path: Path) -> None:
    code = (
        "import sys, base64; from medvault.config import Settings; "
        "from medvault.runtime import build_runtime; "
        f"r = build_runtime(Settings(data_dir={str(tmp_path / 'shared')!r})); "
        "print(r.keyring.active_id, base64.b64encode(r.secret_key).decode())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outputs = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(outputs) == 1, outputs
    on_disk = build_runtime(Settings(data_dir=tmp_path / "shared"))
    kek_id, secret = outputs.pop().split()
    assert on_disk.keyring.active_id == kek_id
    assert base64.b64encode(on_disk.secret_key).decode() == secret


def test_every_setting_has_a_row_in_the_readme() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(MEDVAULT_[A-Z0-9_]+)` \|", readme, re.MULTILINE))
    settings = {f"MEDVAULT_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set()


def test_the_pool_size_sizes_every_postgresql_pool(make_settings: SettingsFactory) -> None:
    runtime = build_runtime(make_settings(database_pool_size=3), run_migrations=False)
    try:
        for database in (runtime.clinical, runtime.auth, runtime.patients):
            pool = database.engine.pool
            assert isinstance(pool, QueuePool)
            if database.is_sqlite:
                # SQLite's pools follow the server's thread pool, whatever the setting.
                assert pool.size() == SQLITE_POOL_SIZE
            else:
                assert (pool.size(), pool._max_overflow) == (3, 6)
    finally:
        runtime.close()


def test_the_pool_size_is_bounded() -> None:
    with pytest.raises(ValueError, match="database_pool_size"):
        Settings(database_pool_size=0)
