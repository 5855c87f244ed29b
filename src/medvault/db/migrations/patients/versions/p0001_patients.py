"""patients: demographics, in their own database (before: the clinical one's c0001, c0011)

Revision ID: p0001
Revises:
Create Date: 2026-12-07 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("identifier_system", sa.String(length=255), nullable=False),
        sa.Column("identifier_value", sa.String(length=128), nullable=False),
        sa.Column("family_name", sa.String(length=200), nullable=False),
        sa.Column("given_name", sa.String(length=200), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("deceased_on", sa.Date(), nullable=True),
        sa.Column("treatment_ended_on", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("identifier_system", "identifier_value", name="uq_patients_identifier"),
    )
    op.create_index("ix_patients_created", "patients", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_patients_created", table_name="patients")
    op.drop_table("patients")
