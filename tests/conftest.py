"""Shared fixtures. The API suite runs once per backend through the ``backend`` fixture,
on both ``sqlite-fs`` and ``pg-s3`` (see ``tests/support/backends.py``).

Helpers shared between packages live in ``tests/support/`` under public names; this file
and the packages' conftest files only declare fixtures, which pytest finds by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from medvault import models_registry  # noqa: F401  (registers every table)
from medvault.app import create_app
from medvault.auth import passwords
from medvault.auth.principal import Role
from medvault.auth.service import create_api_token
from medvault.config import Settings
from medvault.db.base import AuthBase, ClinicalBase, PatientBase
from medvault.runtime import Runtime, build_runtime
from tests.support.azurite import AzuriteServer, azurite_server
from tests.support.backends import (
    BUCKET,
    Backend,
    SettingsFactory,
    backend_settings,
    migrated_sqlite,
)
from tests.support.route_building import install as install_route_memo
from tests.support.services import (
    PostgresDatabases,
    RcloneS3Server,
    S3Server,
    postgres_databases,
    rclone_s3_server,
    s3_server,
)
from tests.support.users import MadeUser, UserFactory, create_user

# Every test builds a fresh app; FastAPI's per-app analysis of the same endpoints is
# memoised for the whole process (tests/support/route_building.py says why it is safe).
ROUTE_MEMO = install_route_memo()

# Every table the models declare, children before parents, so a new table is emptied
# between tests without anyone remembering to list it here (a forgotten one leaked rows
# across tests).
EMPTIED_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (name, tuple(table.name for table in reversed(base.metadata.sorted_tables)))
    for name, base in (("clinical", ClinicalBase), ("auth", AuthBase), ("patients", PatientBase))
)


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PostgresDatabases | None]:
    with postgres_databases() as dbs:
        yield dbs


@pytest.fixture(scope="session")
def pg_urls(pg_databases: PostgresDatabases | None) -> tuple[str, str, str] | None:
    """Clinical, auth and patient databases, as every deployment has them."""
    if pg_databases is None:
        return None
    return (
        pg_databases.create("clinical"),
        pg_databases.create("auth"),
        pg_databases.create("patients"),
    )


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


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer | None]:
    """Azurite's Blob service with the test container (tests/support/azurite.py)."""
    with azurite_server(tmp_path_factory.mktemp("azurite")) as server:
        yield server


def _clean_postgres(runtime: Runtime) -> None:
    """Empty the shared PostgreSQL databases: each pg-s3 test starts from nothing.

    DELETE, not TRUNCATE: TRUNCATE makes new files for every table and its indexes, and
    cost each test 0.2 s against 0.02 s for deleting the few rows a test leaves.
    """
    databases = {"clinical": runtime.clinical, "auth": runtime.auth, "patients": runtime.patients}
    for name, tables in EMPTIED_TABLES:
        with databases[name].engine.begin() as conn:
            # Table names from the models, not input.
            conn.execute(text("; ".join(f"DELETE FROM {table}" for table in tables)))  # noqa: S608
            sequences = conn.execute(
                text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
            ).scalars()
            for sequence in sequences.all():
                conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
    with runtime.auth.engine.begin() as conn:
        # The migration's one epoch row: without it no principal is ever cached.
        conn.execute(text("INSERT INTO auth_epoch (id, value) VALUES (1, 0)"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated SQLite databases that each sqlite-fs test starts from a copy of."""
    return migrated_sqlite(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(params=["sqlite-fs", "pg-s3"])
def backend(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    pg_urls: tuple[str, str, str] | None,
    s3: S3Server | None,
    sqlite_template: Path,
) -> Backend:
    settings = backend_settings(
        request.param, tmp_path, pg_urls, s3, sqlite_template=sqlite_template
    )
    return Backend(request.param, settings)


@pytest.fixture
def make_settings(backend: Backend) -> SettingsFactory:
    """Settings for the current backend with some values overridden."""

    def factory(**overrides: Any) -> Settings:
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


@pytest.fixture
def make_user(runtime: Runtime) -> UserFactory:
    """Create users of any role on the test's runtime (through the service, as the CLI does)."""

    def make(role: Role = Role.CLINICIAN, *, patient_id: str | None = None) -> MadeUser:
        return create_user(runtime, role, patient_id=patient_id)

    return make


# argon2id at its RFC 9106 parameters costs about 0.1 s of CPU and 64 MiB per hash or
# check; the suite's thousands of test users and logins spent minutes of CI on it
# (tests/access and tests/auth alone: 262 s with them, 152 s without). Tests run the
# same code with the cheapest parameters argon2 accepts. Tests about the hashing itself
# are marked ``real_password_hashing``, and every vault a test starts as a process
# hashes with the real ones.
TEST_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
TEST_DUMMY_HASH = TEST_PASSWORD_HASHER.hash("medvault-timing-equaliser")


@pytest.fixture(autouse=True)
def _cheap_password_hashing(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("real_password_hashing") is not None:
        return
    monkeypatch.setattr(passwords, "_hasher", TEST_PASSWORD_HASHER)
    monkeypatch.setattr(passwords, "_DUMMY_HASH", TEST_DUMMY_HASH)
