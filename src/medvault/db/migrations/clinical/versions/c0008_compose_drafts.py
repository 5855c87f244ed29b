"""compose drafts: the Create-document form autosaved, sealed under the keyring

Revision ID: c0008
Revises: c0007
Create Date: 2026-12-07 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0008"
down_revision: str | None = "c0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "compose_drafts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(length=255), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compose_drafts")),
        sa.UniqueConstraint("user_id", name=op.f("uq_compose_drafts_user_id")),
    )
    op.create_index("ix_compose_drafts_saved", "compose_drafts", ["saved_at"])


def downgrade() -> None:
    op.drop_index("ix_compose_drafts_saved", table_name="compose_drafts")
    op.drop_table("compose_drafts")
