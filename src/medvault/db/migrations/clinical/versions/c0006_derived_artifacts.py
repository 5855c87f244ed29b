"""Encrypted derived artifacts (thumbnails, page previews, extracted text) and each
version's preview and text state

Existing versions start at ``none``: `medvault previews backfill` and
`medvault search reindex --extract` derive them.

Revision ID: c0006
Revises: c0005
Create Date: 2026-12-05 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0006"
down_revision: str | None = "c0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "version_derivatives",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(length=255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["document_versions.id"],
            name=op.f("fk_version_derivatives_version_id_document_versions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_version_derivatives")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_version_derivatives_storage_key")),
        sa.UniqueConstraint("version_id", "kind", name="uq_version_derivatives_kind"),
    )
    op.create_index("ix_version_derivatives_kek", "version_derivatives", ["kek_id"])
    with op.batch_alter_table("document_versions", schema=None) as batch_op:
        for state in ("preview_state", "text_state"):
            batch_op.add_column(
                sa.Column(state, sa.String(length=16), server_default="none", nullable=False)
            )
        batch_op.add_column(sa.Column("preview_note", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("text_note", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("text_source", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("document_versions", schema=None) as batch_op:
        for column in ("text_source", "text_note", "preview_note", "text_state", "preview_state"):
            batch_op.drop_column(column)
    op.drop_index("ix_version_derivatives_kek", table_name="version_derivatives")
    op.drop_table("version_derivatives")
