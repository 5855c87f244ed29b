"""Shared fixtures. The API suite runs once per backend through the ``backend`` fixture:

* ``sqlite-fs``: the embedded default (SQLite files + a blob folder);
* ``pg-s3``: PostgreSQL on 127.0.0.1:5432 and a real S3 server (moto) over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from medvault.app import create_app
from medvault.auth.service import create_api_token
from medvault.config import Settings
from medvault.runtime import Runtime, build_runtime
from tests.support.services import (
    PostgresDatabases,
    RcloneS3Server,
    S3Server,
    postgres_databases,
    rclone_s3_server,
    s3_server,
    unavailable,
)
from tests.support.users import make_user

__all__ = ["make_user"]  # shared fixture, defined with the user helpers

BUCKET = "medvault-test"
CLINICAL_TABLES = (
    "audit_events",
    "audit_merkle_nodes",
    "audit_checkpoints",
    "care_team_members",
    "document_versions",
    "documents",
    "patients",
)
AUTH_TABLES = ("api_tokens", "refresh_tokens", "users")


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PostgresDatabases | None]:
    with postgres_databases() as dbs:
        yield dbs


@pytest.fixture(scope="session")
def pg_urls(pg_databases: PostgresDatabases | None) -> tuple[str, str] | None:
    if pg_databases is None:
        return None
    return pg_databases.create("clinical"), pg_databases.create("auth")


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server | None]:
    with s3_server() as server:
        if server is not None:
            server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture(scope="session")
def rclone_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3Server | None]:
    """A second, independent S3 server (``rclone serve s3``) with the test bucket."""
    with rclone_s3_server(str(tmp_path_factory.mktemp("rclone-s3"))) as server:
        if server is not None:
            server.client().create_bucket(Bucket=BUCKET)
        yield server


@dataclass
class Backend:
    name: str
    settings: Settings


def _settings_for(
    name: str,
    tmp_path: Path,
    pg_urls: tuple[str, str] | None,
    s3: S3Server | None,
    **overrides: object,
) -> Settings:
    base: dict[str, object] = {"env": "test", "data_dir": tmp_path / "data"}
    if name == "pg-s3":
        if pg_urls is None:
            unavailable("PostgreSQL on 127.0.0.1:5432 is not reachable")
        if s3 is None:
            unavailable("the moto S3 server could not be started")
        assert pg_urls is not None and s3 is not None
        base.update(
            database_url=pg_urls[0],
            auth_database_url=pg_urls[1],
            storage_url=f"s3://{BUCKET}/{uuid.uuid4().hex}",
            s3_endpoint_url=s3.endpoint_url,
            s3_region="us-east-1",
        )
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


def _clean_postgres(runtime: Runtime) -> None:
    with runtime.clinical.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(CLINICAL_TABLES)} RESTART IDENTITY CASCADE"))
    with runtime.auth.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(AUTH_TABLES)} CASCADE"))


@pytest.fixture(params=["sqlite-fs", "pg-s3"])
def backend(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    pg_urls: tuple[str, str] | None,
    s3: S3Server | None,
) -> Backend:
    return Backend(request.param, _settings_for(request.param, tmp_path, pg_urls, s3))


@pytest.fixture
def make_settings(
    backend: Backend, tmp_path: Path, pg_urls: tuple[str, str] | None, s3: S3Server | None
):  # type: ignore[no-untyped-def]  # returns a factory
    """Settings for the current backend with some values overridden."""

    def factory(**overrides: object) -> Settings:
        merged = backend.settings.model_dump(exclude_unset=True)
        merged.update(overrides)
        return Settings(**merged)

    return factory


@pytest.fixture
def runtime(backend: Backend) -> Iterator[Runtime]:
    rt = build_runtime(backend.settings, run_migrations=True)
    if backend.name == "pg-s3":
        _clean_postgres(rt)
    yield rt
    rt.close()


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime=runtime)


@pytest.fixture
def api_token(runtime: Runtime) -> str:
    with runtime.auth.session() as session:
        issued = create_api_token(session=session, name="pytest")
        session.commit()
    return issued.token


@pytest.fixture
def client(app: FastAPI, api_token: str) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {api_token}"
        yield test_client


@pytest.fixture
def anon_client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
