"""web session views: portal list filters kept server-side behind an opaque id

Revision ID: a0005
Revises: a0004
Create Date: 2026-12-07 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a0005"
down_revision: str | None = "a0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_session_views",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("page", sa.String(length=32), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["web_sessions.id"],
            name=op.f("fk_web_session_views_session_id_web_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session_views")),
    )
    op.create_index(
        "ix_web_session_views_session", "web_session_views", ["session_id", "created_at"]
    )
    op.create_index("ix_web_session_views_created", "web_session_views", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_web_session_views_created", table_name="web_session_views")
    op.drop_index("ix_web_session_views_session", table_name="web_session_views")
    op.drop_table("web_session_views")
