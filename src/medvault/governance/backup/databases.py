"""Dump one database consistently, restore it into an empty one, and tell empty from not.

* SQLite: the online backup API (``sqlite3.Connection.backup``) copies the database
  page by page from one read transaction. In WAL mode a reader neither blocks writers
  nor waits for them, so a live vault under write load keeps working, and the copy is
  the database exactly as it was when that transaction began. It is copied in one
  step on purpose: a stepped backup restarts whenever another connection writes, so
  under steady load it might never finish. A restore copies the file into place.
* PostgreSQL: ``pg_dump --format=custom`` (one REPEATABLE READ snapshot, streamed to
  the file by pg_dump itself) and ``pg_restore --no-owner --no-acl
  --single-transaction --exit-on-error``: the restored objects belong to the target's
  login, grants naming the source cluster's roles are not replayed, and a restore
  that fails part-way leaves the target database as empty as it was.

The password never appears on a command line (where ``ps`` shows it): it goes to the
child in ``PGPASSWORD``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from medvault.governance.backup.manifest import Engine
from medvault.kit.private_files import PRIVATE_FILE_MODE, make_private_dirs

# Relations a vault creates; any of them in a target means it is not empty.
_PG_RELATIONS = """
SELECT n.nspname || '.' || c.relname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1 LIMIT 3
"""


class DatabaseBackupError(RuntimeError):
    """A dump or restore could not be done; the message says why."""


def engine_of(url: str) -> Engine:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return "sqlite"
    if backend == "postgresql":
        return "postgresql"
    raise DatabaseBackupError(f"cannot back up a {backend} database")


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise DatabaseBackupError(f"not a SQLite database file: {url}")
    return Path(database)


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment carrying it."""
    parsed: URL = make_url(url)
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise DatabaseBackupError(f"{name} is not on PATH (install the PostgreSQL client, v15)")
    return found


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, check=False)  # noqa: S603  # fixed argv, no shell
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise DatabaseBackupError(f"{what} failed: {message[-1] if message else done.returncode}")


def _sqlite_rows(path: Path, query: str) -> list[tuple[object, ...]]:
    """Rows of one query on a SQLite file opened read-only (it must not be created)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as lite:
        return list(lite.execute(query).fetchall())


def _private_file(path: Path) -> int:
    make_private_dirs(path.parent)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)


def dump(url: str, target: Path) -> None:
    """Write a consistent copy of the database at ``url`` to ``target`` (a new file)."""
    if engine_of(url) == "sqlite":
        source_path = sqlite_path(url)
        if not source_path.is_file():
            raise DatabaseBackupError(f"no database at {source_path}")
        os.close(_private_file(target))
        source = sqlite3.connect(source_path, timeout=30)
        try:
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)  # one step: see the module docstring
                if copy.execute("PRAGMA quick_check").fetchone() != ("ok",):
                    raise DatabaseBackupError(f"the copy of {source_path} fails quick_check")
                # A file that stands alone: no -wal beside it once this connection closes.
                copy.execute("PRAGMA journal_mode=DELETE")
            finally:
                copy.close()
        finally:
            source.close()
        return
    uri, env = _libpq(url)
    fd = _private_file(target)
    try:
        with os.fdopen(fd, "wb") as out:
            done = subprocess.run(  # noqa: S603  # fixed argv, no shell
                [_tool("pg_dump"), "--format=custom", "--no-password", f"--dbname={uri}"],
                env=env,
                stdout=out,
                stderr=subprocess.PIPE,
                check=False,
            )
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise DatabaseBackupError(f"pg_dump failed: {lines[-1] if lines else done.returncode}")


def occupied(url: str) -> str | None:
    """Why the database at ``url`` is not an empty restore target, or None if it is."""
    if engine_of(url) == "sqlite":
        path = sqlite_path(url)
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            return f"{wal} holds uncheckpointed changes"
        if not path.exists() or path.stat().st_size == 0:
            return None
        names = [
            str(row[0]) for row in _sqlite_rows(path, "SELECT name FROM sqlite_master LIMIT 3")
        ]
        return f"{path} already holds {', '.join(names)}" if names else None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = [str(name) for name in conn.execute(text(_PG_RELATIONS)).scalars()]
    finally:
        engine.dispose()
    if names:
        return f"{make_url(url).database} already holds {', '.join(names)}"
    return None


def restore(url: str, source: Path) -> None:
    """Load ``source`` (a dump made by :func:`dump`) into the empty database at ``url``."""
    if engine_of(url) == "sqlite":
        target = sqlite_path(url)
        make_private_dirs(target.parent)
        partial = target.with_name(f".{target.name}.restoring")
        partial.unlink(missing_ok=True)
        fd = _private_file(partial)
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            # Empty leftovers of a previous open (occupied() allowed only empty ones) belong
            # to the old file; SQLite must not pair them with the restored one.
            for suffix in ("-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return
    uri, env = _libpq(url)
    _run(
        [
            _tool("pg_restore"),
            "--no-owner",
            "--no-acl",
            "--single-transaction",
            "--exit-on-error",
            "--no-password",
            f"--dbname={uri}",
            str(source),
        ],
        env,
        "pg_restore",
    )


def undo_restore(url: str) -> str | None:
    """Best effort after a failed restore: remove a restored SQLite file; for PostgreSQL
    say what the operator must do (dropping objects on their behalf is too blunt)."""
    if engine_of(url) == "sqlite":
        sqlite_path(url).unlink(missing_ok=True)
        return None
    return f"drop and re-create the database {make_url(url).database} before trying again"


def revision(url: str) -> str | None:
    """The Alembic revision a database is at (None before its first migration)."""
    if engine_of(url) == "sqlite":
        try:
            rows = _sqlite_rows(sqlite_path(url), "SELECT version_num FROM alembic_version")
        except sqlite3.OperationalError:
            return None  # no such table: never migrated
        return str(rows[0][0]) if rows else None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("SELECT to_regclass('alembic_version')")).scalar()
            if exists is None:
                return None
            value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    return None if value is None else str(value)
