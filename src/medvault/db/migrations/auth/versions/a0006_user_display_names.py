"""users: a display name and a profession, shown instead of the username; web
sessions: when the user's previous visit ended

Revision ID: a0006
Revises: a0005
Create Date: 2026-12-07 04:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a0006"
down_revision: str | None = "a0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_name", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("profession", sa.String(length=100), nullable=True))
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("previous_visit_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_column("previous_visit_at")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("profession")
        batch_op.drop_column("display_name")
