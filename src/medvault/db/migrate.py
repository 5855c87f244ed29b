"""Run each database's own Alembic history, programmatically (no alembic.ini needed)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text

from medvault.db.engine import Database
from medvault.db.patient_split import PATIENTS_COPIED, copy_patients

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# An arbitrary constant: "medvault" in ASCII, as a 64-bit advisory lock key.
MIGRATION_LOCK_KEY = 0x6D65647661756C74

DatabaseName = Literal["clinical", "auth", "patients"]

# The clinical revision that drops the demographics, and the one before it: a
# clinical database below the first gets its patients copied out at the second.
SPLIT_REVISION = "c0014"
BEFORE_SPLIT = "c0013"


def alembic_config(
    name: DatabaseName, database: Database, attributes: dict[str, Any] | None = None
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR / name))
    config.set_main_option("sqlalchemy.url", database.url.render_as_string(hide_password=False))
    config.attributes["database"] = database
    config.attributes.update(attributes or {})
    return config


@functools.cache
def history(name: DatabaseName) -> ScriptDirectory:
    """A database's revisions, read once per process.

    Alembic reads and compiles every revision file again on each call; the vault asks
    at every start and on every ``medvault`` command (and the test suite, for every
    test's fresh runtime, spent a fifth of its time there).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR / name))
    return ScriptDirectory.from_config(config)


def head(name: DatabaseName) -> str:
    revision = history(name).get_current_head()
    if revision is None:
        raise RuntimeError(f"the {name} migration history has no revisions")
    return revision


def upgrade(
    name: DatabaseName,
    database: Database,
    revision: str = "head",
    attributes: dict[str, Any] | None = None,
) -> None:
    # Already there: skip Alembic's environment (and, on PostgreSQL, its lock) entirely.
    target = head(name) if revision == "head" else revision
    if current_revision(name, database) == target:
        return
    command.upgrade(alembic_config(name, database, attributes), revision)


def reached(name: DatabaseName, database: Database, revision: str) -> bool:
    """Whether the database's history already includes ``revision``."""
    current = current_revision(name, database)
    if current is None:
        return False
    return any(rev.revision == revision for rev in history(name).iterate_revisions(current, "base"))


def upgrade_all(*, auth: Database, patients: Database, clinical: Database) -> None:
    """Bring all three databases to their heads, moving demographics out on the way.

    A clinical database from before the split (two-database deployments) is taken to
    the revision before it, its patients are copied to the patient database and
    verified, and only then does the revision that drops them run. Interrupted at any
    point, the next run starts over where it stopped: the copy skips what is there.
    """
    upgrade("auth", auth)
    upgrade("patients", patients)
    if not reached("clinical", clinical, SPLIT_REVISION):
        upgrade("clinical", clinical, BEFORE_SPLIT)
        copy_patients(clinical=clinical, patients=patients)
        upgrade("clinical", clinical, SPLIT_REVISION, {PATIENTS_COPIED: True})
    upgrade("clinical", clinical)


def current_revision(name: DatabaseName, database: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def modelled_only(metadata: MetaData) -> Callable[[str | None, str, Any], bool]:
    """Alembic ``include_name`` hook: skip what the models do not describe on purpose.

    A domain lists the objects its migrations create by hand (an FTS5 virtual table
    and its shadow tables, a GIN index) in ``metadata.info["unmodelled"]``, so that a
    comparison with the models neither reports them nor proposes to drop them.
    """
    unmodelled = frozenset(metadata.info.get("unmodelled", ()))

    def include(name: str | None, type_: str, parent_names: Any) -> bool:
        return name not in unmodelled

    return include


def run_env(metadata: MetaData) -> None:
    """Body of each history's ``env.py``: migrate through the app's own engine."""
    config = context.config
    database: Database | None = config.attributes.get("database")
    if database is None:
        database = Database(config.get_main_option("sqlalchemy.url") or "")
    with database.engine.connect() as connection:
        if database.is_sqlite:
            # SQLite's procedure for rebuilding a table that others reference: foreign
            # keys off (outside any transaction, where the PRAGMA is a no-op), checked
            # in full before the commit, and on again after (c0014 needs this).
            _driver_execute(connection, "PRAGMA foreign_keys=OFF")
        else:
            # Instances starting together must not run the same migration twice; the
            # lock is per database, and waits rather than fails.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=database.is_sqlite,
                compare_type=True,
                include_name=modelled_only(metadata),
            )
            with context.begin_transaction():
                context.run_migrations()
                if database.is_sqlite:
                    broken = connection.execute(text("PRAGMA foreign_key_check")).first()
                    if broken is not None:
                        raise RuntimeError(f"a migration broke a foreign key: {tuple(broken)}")
            connection.commit()
        finally:
            if database.is_sqlite:
                _driver_execute(connection, "PRAGMA foreign_keys=ON")
            else:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                connection.commit()


def _driver_execute(connection: Connection, statement: str) -> None:
    # Straight to sqlite3 (in autocommit mode, as the engine sets it): through
    # SQLAlchemy, the statement would first begin a transaction.
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute(statement)
