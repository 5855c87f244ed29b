"""The search index's own table: what was indexed for each document.

One row per indexed document. On PostgreSQL ``tsv`` holds the weighted ``tsvector``
(lexemes with positions and weights, never the text) and a GIN index serves queries.
On SQLite the lexemes live in the FTS5 table ``search_fts`` (created by migration
c0007, contentless: it keeps no copy of the text), ``tsv`` stays NULL, and ``id`` is
that table's rowid.

The other columns say *what* was indexed, so that re-indexing can skip a document
whose inputs have not changed and, on SQLite, remove exactly the tokens it inserted
(a contentless FTS5 table forgets the text, and on SQLite 3.40 a row can only be
deleted by handing the same values back). Title, description and file names are the
document's own metadata columns, already plaintext in this database; the content is
represented only by which version's text was indexed and that text's SHA-256 (the
same digest ``version_derivatives.sha256`` holds): the text itself is read back,
decrypted, from the encrypted store when it is needed.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, Uuid
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import ClinicalBase
from medvault.db.types import UTCDateTime

FTS_TABLE = "search_fts"
# Objects the migration creates by hand that the ORM does not model: the FTS5 virtual
# table with its shadow tables (SQLite), and the GIN index (PostgreSQL). Alembic's
# comparison leaves them alone (``db.migrate.run_env`` reads this list).
UNMODELLED = frozenset(
    {
        FTS_TABLE,
        f"{FTS_TABLE}_data",
        f"{FTS_TABLE}_idx",
        f"{FTS_TABLE}_docsize",
        f"{FTS_TABLE}_config",
        f"{FTS_TABLE}_content",
        "ix_search_entries_tsv",
    }
)
ClinicalBase.metadata.info.setdefault("unmodelled", set()).update(UNMODELLED)


class SearchEntry(ClinicalBase):
    __tablename__ = "search_entries"

    # The FTS5 rowid on SQLite: an integer that stays with the document.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="RESTRICT"), unique=True
    )
    # The version whose file names (and text, if any) were indexed.
    version_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # SHA-256 of the indexed text; NULL when no content is in the index for it.
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    filenames: Mapped[str] = mapped_column(Text)
    # PostgreSQL only (NULL on SQLite, where search_fts holds the index).
    tsv: Mapped[str | None] = mapped_column(Text().with_variant(TSVECTOR(), "postgresql"))
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime)
