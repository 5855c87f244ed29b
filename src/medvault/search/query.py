"""Searching the index: which documents match, how well, one keyset page at a time.

The matches are only ever joined onto a query that starts from the access policy's
``readable_documents`` (through ``documents.repository.filtered``), so a search can
return, count or rank nothing the caller could not list anyway.

**Rank.** PostgreSQL ranks with ``ts_rank`` over the weighted tsvector (title A,
description B, file names C, content D): how often and in which fields the words occur.
Not ``ts_rank_cd`` (cover density, which also rewards words standing close together):
it must walk every match's positions, and at 100,000 documents holding a common word
it doubled the query's CPU time (111 ms against 51 ms to score them all, measured on
``bench/search.py``'s corpus); phrases already ask for adjacency explicitly.

SQLite does *not* use FTS5's ``bm25()``: its
score depends on statistics of the whole index (how many documents hold a word,
their average length), every patient's documents included, so a returned score, or
even the order of one's own results, would tell a caller something about documents
they may not see, and any upload anywhere would shift every score between two pages
of a keyset walk. Instead a SQLite match scores by where the query matches as a
whole, with the same weights PostgreSQL gives the four fields (1.0, 0.4, 0.2, 0.1;
summed). Both ranks depend only on the document and the query, so they never move
under a cursor. The ranks of the two engines are not comparable with each other.

**Keyset.** Ordered by (rank desc, created_at desc, id desc); the cursor carries all
three, the rank as the exact double the database computed (PostgreSQL's ``real`` is
cast to ``double precision`` first, so the value round-trips through JSON exactly).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Float,
    Select,
    Subquery,
    bindparam,
    cast,
    column,
    func,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import DOUBLE_PRECISION
from sqlalchemy.orm import Session

from medvault.auth.principal import Principal
from medvault.documents import repository
from medvault.documents.models import Document, DocumentVersion
from medvault.documents.repository import ListFilters
from medvault.kit.keyset import InvalidCursor
from medvault.search.index import regconfig
from medvault.search.models import SearchEntry
from medvault.search.terms import SearchText

RELEVANCE = "relevance"
# PostgreSQL's default weights for D, C, B, A, as tenths (SQLite sums integers exactly).
_SQLITE_FIELD_WEIGHTS = (("title", 10), ("description", 4), ("filenames", 2), ("content", 1))


@dataclass(frozen=True)
class Engine:
    """What the query needs to know about the database it runs on."""

    sqlite: bool
    text_config: str = "english"
    # Whether content may match: only for callers who may read content (an admin reads
    # metadata only, and a match on a word is a read of it), and with fulltext on.
    content: bool = True


_METADATA_COLUMNS = "title description filenames"


def _sqlite_matches(search: SearchText, content: bool) -> Subquery:
    # One MATCH for "anywhere", one per field for the score: a row matching a field
    # also matches anywhere, so every scored row is a match.
    parts = ["SELECT rowid AS entry_id, 0 AS w FROM search_fts WHERE search_fts MATCH :q_all"]
    params: dict[str, str] = {"q_all": search.fts5(None if content else _METADATA_COLUMNS)}
    for name, weight in _SQLITE_FIELD_WEIGHTS:
        if name == "content" and not content:
            continue
        # Only constants of this module go into the SQL; the user's words are bound.
        parts.append(f"SELECT rowid, {weight} FROM search_fts WHERE search_fts MATCH :q_{name}")  # noqa: S608
        params[f"q_{name}"] = search.fts5(name)
    union = " UNION ALL ".join(parts)
    sql = f"SELECT entry_id, CAST(SUM(w) AS REAL) / 10.0 AS rank FROM ({union}) GROUP BY entry_id"  # noqa: S608  # constants only
    scored = (
        text(sql)
        .bindparams(*(bindparam(key, value) for key, value in params.items()))
        .columns(column("entry_id"), column("rank", Float()))
        .subquery("fts_hits")
    )
    return (
        select(SearchEntry.document_id.label("document_id"), scored.c.rank.label("rank"))
        .join(scored, scored.c.entry_id == SearchEntry.id)
        .subquery("hits")
    )


def _postgres_matches(search: SearchText, config: str, content: bool) -> Subquery:
    query = func.to_tsquery(regconfig(config), literal(search.tsquery()))
    # The GIN index finds candidates; without content rights, the lexemes of weight D
    # (content) are filtered out before the real match and the rank.
    vector = SearchEntry.tsv if content else func.ts_filter(SearchEntry.tsv, text("'{a,b,c}'"))
    rank = cast(func.ts_rank(vector, query), DOUBLE_PRECISION)
    found = select(SearchEntry.document_id.label("document_id"), rank.label("rank")).where(
        SearchEntry.tsv.op("@@")(query)
    )
    if not content:
        found = found.where(vector.op("@@")(query))
    return found.subquery("hits")


def matches(search: SearchText, engine: Engine) -> Subquery:
    """(document_id, rank) of every indexed document matching ``search``: unscoped,
    so only ever join it onto a readable query."""
    if engine.sqlite:
        return _sqlite_matches(search, engine.content)
    return _postgres_matches(search, engine.text_config, engine.content)


@dataclass(frozen=True)
class ContentQuery:
    """A parsed full-text search and how to run it (for faces that filter by words)."""

    search: SearchText
    engine: Engine


@dataclass(frozen=True)
class RankCursor:
    """The last row of a relevance page: its rank, creation time and id."""

    rank: float
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = {"s": RELEVANCE, "r": self.rank, "t": self.created_at.isoformat(), "i": str(self.id)}
        return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> RankCursor:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if data["s"] != RELEVANCE:
                raise ValueError("cursor from another sort order")
            rank = data["r"]
            if isinstance(rank, bool) or not isinstance(rank, int | float):
                raise TypeError("rank is not a number")
            if not math.isfinite(rank):
                raise ValueError("rank is not finite")
            created_at = datetime.fromisoformat(data["t"])
            if created_at.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(float(rank), created_at, uuid.UUID(data["i"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidCursor(
                "Use the next_cursor value from a previous page of the same search, as-is."
            ) from exc


@dataclass(frozen=True)
class Hit:
    document: Document
    version: DocumentVersion
    rank: float


def page(
    session: Session,
    principal: Principal,
    *,
    search: SearchText,
    engine: Engine,
    filters: ListFilters,
    cursor: RankCursor | None,
    limit: int,
) -> list[Hit]:
    """One page of the caller's readable documents that match, best first."""
    hits = matches(search, engine)
    query: Select[Any] = (
        repository.filtered(principal, filters)
        .add_columns(hits.c.rank)
        .join(hits, hits.c.document_id == Document.id)
    )
    if cursor is not None:
        query = query.where(
            tuple_(hits.c.rank, Document.created_at, Document.id)
            < tuple_(
                literal(cursor.rank, Float()),
                literal(cursor.created_at, Document.created_at.type),
                literal(cursor.id, Document.id.type),
            )
        )
    query = query.order_by(hits.c.rank.desc(), Document.created_at.desc(), Document.id.desc())
    rows = session.execute(query.limit(limit))
    return [Hit(row[0], row[1], float(row[2])) for row in rows]


def cursor_after(hit: Hit) -> RankCursor:
    return RankCursor(hit.rank, hit.document.created_at, hit.document.id)
