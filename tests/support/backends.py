"""The two backends the API suite runs on, as Settings: ``sqlite-fs`` and ``pg-s3``.

* ``sqlite-fs``: the embedded default (SQLite files + a blob folder);
* ``pg-s3``: PostgreSQL on 127.0.0.1:5432 and a real S3 server (moto) over HTTP.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import make_url

from medvault.config import Settings
from medvault.kit.private_files import make_private_dirs
from medvault.runtime import build_runtime
from tests.support.services import S3Server, unavailable

BUCKET = "medvault-test"  # created by the session-wide ``s3`` and ``rclone_s3`` fixtures


@dataclass
class Backend:
    name: str
    settings: Settings


class SettingsFactory(Protocol):
    """The ``make_settings`` fixture: the current backend's settings, some overridden."""

    def __call__(self, **overrides: Any) -> Settings: ...


def migrated_sqlite(directory: Path) -> Path:
    """Three SQLite databases at their heads under ``directory`` (a per-worker template).

    Migrating three fresh files cost every sqlite-fs test about 0.1 s of Alembic;
    copying migrated ones costs a millisecond. The migrations themselves are tested on
    fresh and populated databases in tests/db.
    """
    settings = Settings(env="test", data_dir=directory)
    build_runtime(settings, run_migrations=True).close()
    return directory


def seed_sqlite(data_dir: Path, template: Path) -> None:
    """Copy the migrated template's databases into a fresh ``data_dir``.

    copy2 keeps the files' owner-only mode; a WAL the template left is part of its
    database and goes along.
    """
    make_private_dirs(data_dir)
    # The files the embedded default names, as Settings names them.
    defaults = Settings(env="test", data_dir=template)
    urls = (defaults.clinical_database_url, defaults.auth_db_url, defaults.patient_db_url)
    for url in urls:
        name = Path(str(make_url(url).database)).name
        for part in (name, f"{name}-wal"):
            if (template / part).exists():
                shutil.copy2(template / part, data_dir / part)


def backend_settings(
    name: str,
    tmp_path: Path,
    pg_urls: tuple[str, str, str] | None,
    s3: S3Server | None,
    *,
    sqlite_template: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Settings for backend ``name`` with data under ``tmp_path``; skips if a server is down.

    With ``sqlite_template`` (see ``migrated_sqlite``), sqlite-fs starts from copies of
    already migrated databases.
    """
    # Any: values of many field types, checked by Settings' own validation.
    base: dict[str, Any] = {"env": "test", "data_dir": tmp_path / "data"}
    if name == "pg-s3":
        if pg_urls is None:
            unavailable("PostgreSQL on 127.0.0.1:5432 is not reachable")
        if s3 is None:
            unavailable("the moto S3 server could not be started")
        base.update(
            database_url=pg_urls[0],
            auth_database_url=pg_urls[1],
            patient_database_url=pg_urls[2],
            storage_url=f"s3://{BUCKET}/{uuid.uuid4().hex}",
            s3_endpoint_url=s3.endpoint_url,
            s3_region="us-east-1",
        )
    elif sqlite_template is not None and "data_dir" not in overrides:
        seed_sqlite(base["data_dir"], sqlite_template)
    base.update(overrides)
    return Settings(**base)
