"""Run each database's own Alembic history, programmatically (no alembic.ini needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text

from medvault.db.engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# An arbitrary constant: "medvault" in ASCII, as a 64-bit advisory lock key.
MIGRATION_LOCK_KEY = 0x6D65647661756C74

DatabaseName = Literal["clinical", "auth"]


def alembic_config(name: DatabaseName, database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR / name))
    config.set_main_option("sqlalchemy.url", database.url.render_as_string(hide_password=False))
    config.attributes["database"] = database
    return config


def upgrade(name: DatabaseName, database: Database, revision: str = "head") -> None:
    command.upgrade(alembic_config(name, database), revision)


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
        if not database.is_sqlite:
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
            connection.commit()
        finally:
            if not database.is_sqlite:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                connection.commit()
