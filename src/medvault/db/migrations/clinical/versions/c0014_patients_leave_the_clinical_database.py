"""patients leave the clinical database: only their pseudonymous ids stay (patient_refs)

Revision ID: c0014
Revises: c0013
Create Date: 2026-12-07 19:40:00

Runs only after ``medvault.db.patient_split`` has copied every row of ``patients`` to
the patient database and verified the copy (``medvault migrate`` does both, in that
order). Run on its own, by Alembic directly, it refuses while ``patients`` holds a row:
dropping demographics nobody copied would lose them.

``patients`` becomes ``patient_refs`` with the ``id`` column only. The clinical tables
keep referencing it, so their foreign keys stay inside the clinical database.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0014"
down_revision: str | None = "c0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Set by medvault.db.migrate once the copy is verified (kept literal: a migration
# imports nothing from the application that may change after it is written).
COPIED_ATTRIBUTE = "patients_copied"

REFERENCING = {
    "documents": "RESTRICT",
    "care_team_members": "CASCADE",
    "legal_holds": "RESTRICT",
    "patient_exports": "RESTRICT",
}


class PatientsNotCopied(RuntimeError):
    pass


def upgrade() -> None:
    bind = op.get_bind()
    copied = bool(op.get_context().config.attributes.get(COPIED_ATTRIBUTE))  # type: ignore[union-attr]
    if not copied and bind.execute(sa.text("SELECT 1 FROM patients LIMIT 1")).first():
        raise PatientsNotCopied(
            "The clinical database still holds patients that were not copied to the "
            "patient database; run `medvault migrate`, which copies them first."
        )
    if bind.dialect.name == "sqlite":
        # The ids go to a new table. Renaming the old one rewrites every REFERENCES
        # clause to the new name (SQLite >= 3.26); dropping it then and giving the new
        # table that name leaves the clinical tables referencing bare ids. This runs
        # with foreign keys off (db.migrate), as SQLite's procedure for rebuilding a
        # referenced table requires, and foreign_key_check passes before the commit.
        # secure_delete (set on every connection) zeroes the dropped table's pages.
        op.create_table(
            "_patient_refs",
            sa.Column("id", sa.Uuid(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_refs")),
        )
        op.execute("INSERT INTO _patient_refs (id) SELECT id FROM patients")
        op.drop_index("ix_patients_created", table_name="patients")
        op.rename_table("patients", "patient_refs")
        op.drop_table("patient_refs")
        op.rename_table("_patient_refs", "patient_refs")
        return
    # PostgreSQL: a new table and a DROP of the old one, not DROP COLUMN, which would
    # leave the demographics in the table's pages until a VACUUM FULL.
    op.create_table(
        "patient_refs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_refs")),
    )
    op.execute("INSERT INTO patient_refs (id) SELECT id FROM patients")
    for table, ondelete in REFERENCING.items():
        op.drop_constraint(f"fk_{table}_patient_id_patients", table, type_="foreignkey")
        op.create_foreign_key(
            op.f(f"fk_{table}_patient_id_patient_refs"),
            table,
            "patient_refs",
            ["patient_id"],
            ["id"],
            ondelete=ondelete,
        )
    op.drop_index("ix_patients_created", table_name="patients")
    op.drop_table("patients")


def downgrade() -> None:
    raise NotImplementedError(
        "The demographics now live in the patient database; restore a backup taken "
        "before c0014 to go back."
    )
