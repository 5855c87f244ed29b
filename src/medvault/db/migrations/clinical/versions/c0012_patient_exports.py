"""patient exports: "everything you hold about me" archives (right of access)

Revision ID: c0012
Revises: c0011
Create Date: 2026-12-07 16:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0012"
down_revision: str | None = "c0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patient_exports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_role", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("downloaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("passphrase_kek_id", sa.String(length=64), nullable=True),
        sa.Column("passphrase_wrapped_dek", sa.LargeBinary(length=255), nullable=True),
        sa.Column("sealed_passphrase", sa.LargeBinary(), nullable=True),
        sa.Column("storage_key", sa.String(length=255), nullable=True),
        sa.Column("kek_id", sa.String(length=64), nullable=True),
        sa.Column("wrapped_dek", sa.LargeBinary(length=255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_patient_exports_patient_id_patients"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_exports")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_patient_exports_storage_key")),
    )
    op.create_index("ix_patient_exports_patient", "patient_exports", ["patient_id", "created_at"])
    op.create_index("ix_patient_exports_expires", "patient_exports", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_patient_exports_expires", table_name="patient_exports")
    op.drop_index("ix_patient_exports_patient", table_name="patient_exports")
    op.drop_table("patient_exports")
