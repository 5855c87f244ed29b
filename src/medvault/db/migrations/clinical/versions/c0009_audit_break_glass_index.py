"""audit events: a partial index of break-glass events, for "emergency access only"

Revision ID: c0009
Revises: c0008
Create Date: 2026-12-07 03:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0009"
down_revision: str | None = "c0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_events_break_glass",
        "audit_events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("break_glass_reason IS NOT NULL"),
        sqlite_where=sa.text("break_glass_reason IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_break_glass", table_name="audit_events")
