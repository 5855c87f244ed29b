"""Full-text search index: search_entries (+ tsvector and GIN on PostgreSQL, a
contentless FTS5 table on SQLite)

The index starts empty: `medvault search reindex` fills it for documents stored before.

Revision ID: c0007
Revises: c0006
Create Date: 2026-12-05 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c0007"
down_revision: str | None = "c0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Contentless (content=''): the index keeps tokens and positions, never the text.
# Porter stemming over unicode61 approximates PostgreSQL's english configuration, so
# both engines find the same documents.
FTS5_TABLE = (
    "CREATE VIRTUAL TABLE search_fts USING fts5("
    "title, description, filenames, content, "
    "content='', tokenize='porter unicode61 remove_diacritics 2')"
)


def upgrade() -> None:
    op.create_table(
        "search_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("filenames", sa.Text(), nullable=False),
        sa.Column(
            "tsv", sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql"), nullable=True
        ),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_search_entries_document_id_documents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_entries")),
        sa.UniqueConstraint("document_id", name=op.f("uq_search_entries_document_id")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_search_entries_tsv ON search_entries USING gin (tsv)")
    else:
        op.execute(FTS5_TABLE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_search_entries_tsv")
    else:
        op.execute("DROP TABLE IF EXISTS search_fts")
    op.drop_table("search_entries")
