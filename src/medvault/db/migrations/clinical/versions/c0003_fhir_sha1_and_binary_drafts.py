"""FHIR: SHA-1 of each version, drafts stored by POST /fhir/Binary

Revision ID: c0003
Revises: c0002
Create Date: 2026-11-23 23:00:00.000000

Versions stored before this migration keep ``sha1`` NULL: their DocumentReference
omits ``Attachment.hash`` until ``medvault fhir backfill-hashes`` has streamed them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0003"
down_revision: str | None = "c0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("document_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sha1", sa.String(length=40), nullable=True))

    op.create_table(
        "fhir_binary_drafts",
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_fhir_binary_drafts_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_fhir_binary_drafts")),
    )


def downgrade() -> None:
    op.drop_table("fhir_binary_drafts")
    with op.batch_alter_table("document_versions", schema=None) as batch_op:
        batch_op.drop_column("sha1")
