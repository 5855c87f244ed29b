"""Each database's Alembic history builds exactly the schema the models describe."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text

from medvault.db.base import AuthBase, ClinicalBase, PatientBase
from medvault.db.engine import Database
from medvault.db.migrate import (
    DatabaseName,
    alembic_config,
    current_revision,
    modelled_only,
)
from medvault.runtime import Runtime
from tests.support.services import PostgresDatabases, unavailable


def _drift(database: Database, metadata: MetaData) -> list[object]:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_name": modelled_only(metadata)},
        )
        return list(compare_metadata(context, metadata))


def head(name: DatabaseName, database: Database) -> str | None:
    return ScriptDirectory.from_config(alembic_config(name, database)).get_current_head()


def test_migrations_match_the_models(runtime: Runtime) -> None:
    assert current_revision("clinical", runtime.clinical) == head("clinical", runtime.clinical)
    assert current_revision("auth", runtime.auth) == head("auth", runtime.auth)
    assert current_revision("patients", runtime.patients) == head("patients", runtime.patients)
    assert _drift(runtime.clinical, ClinicalBase.metadata) == []
    assert _drift(runtime.auth, AuthBase.metadata) == []
    assert _drift(runtime.patients, PatientBase.metadata) == []


def test_databases_hold_only_their_own_tables(runtime: Runtime) -> None:
    clinical = set(ClinicalBase.metadata.tables)
    auth = set(AuthBase.metadata.tables)
    patients = set(PatientBase.metadata.tables)
    assert clinical.isdisjoint(auth) and clinical.isdisjoint(patients)
    assert auth.isdisjoint(patients)
    assert "api_tokens" in auth and "documents" in clinical and patients == {"patients"}


def test_migrating_twice_is_harmless(runtime: Runtime) -> None:
    runtime.migrate()
    assert current_revision("clinical", runtime.clinical) == head("clinical", runtime.clinical)


def test_sqlite_runs_in_wal_mode(runtime: Runtime) -> None:
    if not runtime.clinical.is_sqlite:
        assert runtime.clinical.engine.dialect.name == "postgresql"
        return
    for database in (runtime.clinical, runtime.auth, runtime.patients):
        with database.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_instances_migrating_at_once_do_not_collide(
    pg_databases: PostgresDatabases | None,
) -> None:
    """Several processes start on one fresh PostgreSQL database at the same moment."""
    if pg_databases is None:
        unavailable("PostgreSQL on 127.0.0.1:5432 is not reachable")
    assert pg_databases is not None
    url = pg_databases.create("migrace")
    code = (
        "from medvault.db.engine import Database; from medvault.db.migrate import upgrade; "
        f"upgrade('clinical', Database({url!r}))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)
    ]
    results = [
        (proc.wait(timeout=120), proc.stderr.read() if proc.stderr else b"") for proc in procs
    ]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    database = Database(url)
    assert current_revision("clinical", database) == head("clinical", database)
    database.dispose()
