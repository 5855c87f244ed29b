"""Moving demographics from the clinical database to the patient database (c0014).

Two-database deployments kept ``patients`` in the clinical database. Before clinical
revision c0014 drops it, every row is copied to the patient database and the copy is
verified row by row. The copy is idempotent (ids already there are compared, not
inserted again), so a run interrupted anywhere is finished by the next one; and it
stops, dropping nothing, when the patient database holds anything that disagrees.

The table is described here, not imported from ``patients.models``: ``db/`` knows no
domain, and the copy must read the clinical table as it was at c0013.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    Date,
    DateTime,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    inspect,
    select,
    text,
)

if TYPE_CHECKING:
    from medvault.db.engine import Database

PATIENTS_COPIED = "patients_copied"  # the Alembic attribute c0014 checks
BATCH = 500
# Same key as db.migrate's lock (on the patient database, so a separate lock): two
# instances starting at once do not copy side by side.
_LOCK_KEY = 0x6D65647661756C74

_PATIENTS = Table(
    "patients",
    MetaData(),
    Column("id", Uuid, primary_key=True),
    Column("identifier_system", String(255)),
    Column("identifier_value", String(128)),
    Column("family_name", String(200)),
    Column("given_name", String(200)),
    Column("birth_date", Date),
    Column("deceased_on", Date),
    Column("treatment_ended_on", Date),
    Column("created_at", DateTime(timezone=True)),
)

Row = tuple[Any, ...]


class PatientSplitConflict(RuntimeError):
    """The patient database disagrees with the clinical one: nothing was dropped."""


def copy_patients(*, clinical: Database, patients: Database) -> int:
    """Copy and verify every clinical ``patients`` row; the number of rows, 0 if none left."""
    with clinical.engine.connect() as source:
        if not inspect(source).has_table("patients"):
            return 0
        with patients.engine.connect() as target:
            if not patients.is_sqlite:
                target.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
                target.commit()
            try:
                copied = _copy(source, target)
                _verify(source, target)
            finally:
                if not patients.is_sqlite:
                    target.rollback()
                    target.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                    target.commit()
            source.rollback()
    return copied


def _rows(connection: Connection) -> Iterator[Row]:
    """Every row in id order, in batches (keyset), so memory stays flat."""
    after: uuid.UUID | None = None
    while True:
        query = select(_PATIENTS).order_by(_PATIENTS.c.id).limit(BATCH)
        if after is not None:
            query = query.where(_PATIENTS.c.id > after)
        batch = [_normal(tuple(row)) for row in connection.execute(query)]
        yield from batch
        if len(batch) < BATCH:
            return
        after = batch[-1][0]


def _normal(row: Row) -> Row:
    # SQLite hands back naive datetimes; the same instant must compare equal across
    # engines (a SQLite clinical database may move to a PostgreSQL patient database).
    return tuple(
        value.replace(tzinfo=UTC)
        if isinstance(value, datetime) and value.tzinfo is None
        else value.astimezone(UTC)
        if isinstance(value, datetime)
        else value
        for value in row
    )


def _copy(source: Connection, target: Connection) -> int:
    copied = 0
    pending: list[Row] = []
    for row in _rows(source):
        pending.append(row)
        if len(pending) == BATCH:
            copied += _copy_batch(target, pending)
            pending = []
    if pending:
        copied += _copy_batch(target, pending)
    return copied


def _copy_batch(target: Connection, rows: list[Row]) -> int:
    ids = [row[0] for row in rows]
    there = {
        row[0]: row
        for row in (
            _normal(tuple(r))
            for r in target.execute(select(_PATIENTS).where(_PATIENTS.c.id.in_(ids)))
        )
    }
    missing = []
    for row in rows:
        existing = there.get(row[0])
        if existing is None:
            missing.append(row)
        elif existing != row:
            raise PatientSplitConflict(
                f"patient {row[0]} differs between the clinical and the patient database; "
                "nothing was dropped (is MEDVAULT_PATIENT_DATABASE_URL the right database?)"
            )
    if missing:
        names = [c.name for c in _PATIENTS.columns]
        try:
            target.execute(
                _PATIENTS.insert(), [dict(zip(names, row, strict=True)) for row in missing]
            )
            target.commit()
        except Exception as error:
            target.rollback()
            raise PatientSplitConflict(
                "the patient database already holds another patient with the identifier "
                f"of one being copied ({type(error).__name__}); nothing was dropped"
            ) from None
    return len(missing)


def _verify(source: Connection, target: Connection) -> None:
    count_source = source.scalar(select(func.count()).select_from(_PATIENTS))
    count_target = target.scalar(select(func.count()).select_from(_PATIENTS))
    if count_source != count_target:
        raise PatientSplitConflict(
            f"the patient database holds {count_target} patients, the clinical one "
            f"{count_source}; nothing was dropped (is MEDVAULT_PATIENT_DATABASE_URL the "
            "right database?)"
        )
    for left, right in zip(_rows(source), _rows(target), strict=True):
        if left != right:
            raise PatientSplitConflict(
                f"patient {left[0]} was not copied faithfully; nothing was dropped"
            )


__all__ = ["PATIENTS_COPIED", "PatientSplitConflict", "copy_patients"]
