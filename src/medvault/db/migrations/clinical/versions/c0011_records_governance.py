"""records governance: retention dates, legal holds, appraisals, destruction tombstones

Revision ID: c0011
Revises: c0010
Create Date: 2026-12-07 16:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0011"
down_revision: str | None = "c0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("deceased_on", sa.Date(), nullable=True))
        batch.add_column(sa.Column("treatment_ended_on", sa.Date(), nullable=True))
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("retention_class", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("retain_until", sa.Date(), nullable=True))
        batch.add_column(sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_documents_retain_until", "documents", ["retain_until"])
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=True),
        sa.Column("document_id", sa.Uuid(), nullable=True),
        sa.Column("document_type", sa.String(length=32), nullable=True),
        sa.Column("created_from", sa.Date(), nullable=True),
        sa.Column("created_to", sa.Date(), nullable=True),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("placed_by", sa.String(length=200), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=200), nullable=True),
        sa.Column("release_reason", sa.String(length=1000), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_legal_holds_patient_id_patients"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_legal_holds_document_id_documents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    op.create_index("ix_legal_holds_active", "legal_holds", ["released_at"])
    op.create_table(
        "appraisals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("retention_class", sa.String(length=64), nullable=False),
        sa.Column("retain_until", sa.Date(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approvals", sa.JSON(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("keep_until", sa.Date(), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_appraisals_document_id_documents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appraisals")),
    )
    op.create_index("ix_appraisals_state", "appraisals", ["state", "listed_at"])
    op.create_index("ix_appraisals_document", "appraisals", ["document_id"])


def downgrade() -> None:
    op.drop_index("ix_appraisals_document", table_name="appraisals")
    op.drop_index("ix_appraisals_state", table_name="appraisals")
    op.drop_table("appraisals")
    op.drop_index("ix_legal_holds_active", table_name="legal_holds")
    op.drop_table("legal_holds")
    op.drop_index("ix_documents_retain_until", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("destroyed_at")
        batch.drop_column("retain_until")
        batch.drop_column("retention_class")
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("treatment_ended_on")
        batch.drop_column("deceased_on")
