"""The two backends the API suite runs on, as Settings: ``sqlite-fs`` and ``pg-s3``.

* ``sqlite-fs``: the embedded default (SQLite files + a blob folder);
* ``pg-s3``: PostgreSQL on 127.0.0.1:5432 and a real S3 server (moto) over HTTP.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from medvault.config import Settings
from tests.support.services import S3Server, unavailable

BUCKET = "medvault-test"  # created by the session-wide ``s3`` and ``rclone_s3`` fixtures


@dataclass
class Backend:
    name: str
    settings: Settings


class SettingsFactory(Protocol):
    """The ``make_settings`` fixture: the current backend's settings, some overridden."""

    def __call__(self, **overrides: Any) -> Settings: ...


def backend_settings(
    name: str,
    tmp_path: Path,
    pg_urls: tuple[str, str, str] | None,
    s3: S3Server | None,
    **overrides: Any,
) -> Settings:
    """Settings for backend ``name`` with data under ``tmp_path``; skips if a server is down."""
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
    base.update(overrides)
    return Settings(**base)
