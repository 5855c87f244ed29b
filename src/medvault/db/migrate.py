"""Run each database's own Alembic history, programmatically (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData

from medvault.db.engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

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


def run_env(metadata: MetaData) -> None:
    """Body of each history's ``env.py``: migrate through the app's own engine."""
    config = context.config
    database: Database | None = config.attributes.get("database")
    if database is None:
        database = Database(config.get_main_option("sqlalchemy.url") or "")
    with database.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=database.is_sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
