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

**Window.** A page ranks only the newest ``rank_window`` (default 1,000) of the
caller's matching documents, found by walking them newest first. Ranking every match
needs every match's tsvector: for a word in all of 100,000 documents that was 117 ms
at the median, where the 50 ms p99 target allowed less than half. The walk stops after
the window, so its cost follows the window rather than the number of matches, and
PostgreSQL still picks the GIN index when a word is rare. A search that matches more
says so (``older_matches_unranked``); a word that common ranks nothing usefully, and
narrowing by words, patient, type or dates brings older documents back into the window.
Both backends take the same window, so they find the same documents.

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
    ColumnElement,
    Float,
    Integer,
    Select,
    Subquery,
    and_,
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
from medvault.kit.i18n import N_
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
    # Matching documents ranked per search: the newest this many (see the docstring).
    rank_window: int = 1000


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


def _postgres_matches(search: SearchText, engine: Engine) -> Subquery:
    # The GIN index finds candidates; without content rights, the lexemes of weight D
    # (content) are filtered out before the real match and the rank.
    tsquery, condition = _postgres_condition(search, engine)
    rank = _postgres_rank(tsquery, engine)
    found = select(SearchEntry.document_id.label("document_id"), rank.label("rank"))
    return found.where(condition).subquery("hits")


def matches(search: SearchText, engine: Engine) -> Subquery:
    """(document_id, rank) of every indexed document matching ``search``: unscoped,
    so only ever join it onto a readable query."""
    if engine.sqlite:
        return _sqlite_matches(search, engine.content)
    return _postgres_matches(search, engine)


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
                N_("Use the next_cursor value from a previous page of the same search, as-is.")
            ) from exc


@dataclass(frozen=True)
class Hit:
    document: Document
    version: DocumentVersion
    rank: float


@dataclass(frozen=True)
class RankedPage:
    hits: list[Hit]
    # More documents match than the window ranks (the oldest are left out).
    older_matches_unranked: bool


def _postgres_condition(search: SearchText, engine: Engine) -> tuple[Any, ColumnElement[bool]]:
    """The tsquery and the match condition on ``search_entries``."""
    tsquery = func.to_tsquery(regconfig(engine.text_config), literal(search.tsquery()))
    condition: ColumnElement[bool] = SearchEntry.tsv.op("@@")(tsquery)
    if not engine.content:
        condition = and_(condition, _metadata_vector().op("@@")(tsquery))
    return tsquery, condition


def _postgres_rank(tsquery: Any, engine: Engine) -> ColumnElement[float]:
    """``ts_rank`` over the fields the caller may match, as an exact double."""
    vector = SearchEntry.tsv if engine.content else _metadata_vector()
    return cast(func.ts_rank(vector, tsquery), DOUBLE_PRECISION)


def _metadata_vector() -> ColumnElement[Any]:
    # Lexemes of weight D are the content's.
    return func.ts_filter(SearchEntry.tsv, text("'{a,b,c}'"))


def _window(
    principal: Principal, search: SearchText, engine: Engine, filters: ListFilters
) -> Subquery:
    """(document_id, entry_id, created_at, position, found) of the caller's newest
    matching documents: at most ``rank_window`` + 1, so that ``found`` tells whether
    older ones were left out. Built on ``repository.filtered``, the access policy's
    readable documents, so nothing outside them can enter the window or its count."""
    newest = (
        repository.filtered(principal, filters)
        .with_only_columns(
            Document.id.label("document_id"),
            Document.created_at.label("created_at"),
            SearchEntry.id.label("entry_id"),
        )
        .join(SearchEntry, SearchEntry.document_id == Document.id)
    )
    if engine.sqlite:
        anywhere = search.fts5(None if engine.content else _METADATA_COLUMNS)
        fts = (
            text("SELECT rowid FROM search_fts WHERE search_fts MATCH :q_window")
            .bindparams(bindparam("q_window", anywhere))
            .columns(column("rowid", Integer()))
            .subquery("fts_window")
        )
        newest = newest.where(SearchEntry.id.in_(select(fts.c.rowid)))
    else:
        newest = newest.where(_postgres_condition(search, engine)[1])
    limited = (
        newest.order_by(Document.created_at.desc(), Document.id.desc())
        .limit(engine.rank_window + 1)
        .subquery("newest")
    )
    order = (limited.c.created_at.desc(), limited.c.document_id.desc())
    return select(
        limited.c.document_id,
        limited.c.entry_id,
        limited.c.created_at,
        func.row_number().over(order_by=order).label("position"),
        func.count().over().label("found"),
    ).subquery("window")


def _best(
    window: Subquery, search: SearchText, engine: Engine, cursor: RankCursor | None, limit: int
) -> Subquery:
    """(document_id, created_at, rank, found) of the page: the window's documents scored,
    past the cursor, best first, at most ``limit``."""
    if engine.sqlite:
        scores = matches(search, engine)
        scored = select(
            window.c.document_id, window.c.created_at, scores.c.rank, window.c.found
        ).join(scores, scores.c.document_id == window.c.document_id)
        rank: ColumnElement[float] = scores.c.rank
    else:
        rank = _postgres_rank(_postgres_condition(search, engine)[0], engine)
        scored = select(
            window.c.document_id, window.c.created_at, rank.label("rank"), window.c.found
        ).join(SearchEntry, SearchEntry.id == window.c.entry_id)
    scored = scored.where(window.c.position <= engine.rank_window)
    if cursor is not None:
        scored = scored.where(
            tuple_(rank, window.c.created_at, window.c.document_id)
            < tuple_(
                literal(cursor.rank, Float()),
                literal(cursor.created_at, Document.created_at.type),
                literal(cursor.id, Document.id.type),
            )
        )
    order = (rank.desc(), window.c.created_at.desc(), window.c.document_id.desc())
    return scored.order_by(*order).limit(limit).subquery("hits")


def _page_query(hits: Subquery) -> Select[Any]:
    """(Document, current DocumentVersion, rank, found) rows of one page, best first."""
    # The window was taken from the readable, filtered documents, so this only fetches
    # the page's rows by primary key. Joining the window onto every readable document
    # instead made PostgreSQL hash-join it with a scan of the whole table (31 of 118 ms
    # for a word in 10 % of 100,000 documents).
    return (
        select(Document, DocumentVersion, hits.c.rank, hits.c.found)
        .select_from(hits)
        .join(Document, Document.id == hits.c.document_id)
        .join(
            DocumentVersion,
            and_(
                DocumentVersion.document_id == Document.id,
                DocumentVersion.version == Document.current_version,
            ),
        )
        .order_by(hits.c.rank.desc(), hits.c.created_at.desc(), hits.c.document_id.desc())
    )


# Planner settings for one search's transaction (PostgreSQL), each measured on the
# benchmark's 100,000 documents (EXPLAIN ANALYZE, words in 1 % and 10 % of them):
_SEARCH_PLANNER = (
    # psycopg prepares a statement once it has run five times, and PostgreSQL may then
    # settle on a generic plan that knows nothing of the words. How many documents a
    # word matches decides between the GIN index and a newest-first walk: the generic
    # plan took 262 ms for a word in every document (8 ms planned for it).
    ("plan_cache_mode", "force_custom_plan"),
    # The index probes of a search hit cached pages; at the default 4 (a spinning disk)
    # the planner scanned the whole documents table instead of probing 1,000 rows by
    # key: 30 ms against 12 ms for the word in 1 %.
    ("random_page_cost", "1.1"),
    # A page is at most rank_window rows; starting a parallel worker took longer than
    # the work (23 ms to its first row; the word in 10 %: 43-60 ms against 33-36 ms).
    ("max_parallel_workers_per_gather", "0"),
)
_SET_SEARCH_PLANNER = text(
    "SELECT "
    + ", ".join(f"set_config('{name}', '{value}', true)" for name, value in _SEARCH_PLANNER)
)


def plan_for_the_words(session: Session) -> None:
    """On PostgreSQL, plan this transaction's searches as ``_SEARCH_PLANNER`` says
    (transaction-local: the next transaction on the connection has the defaults)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_SET_SEARCH_PLANNER)


def page(
    session: Session,
    principal: Principal,
    *,
    search: SearchText,
    engine: Engine,
    filters: ListFilters,
    cursor: RankCursor | None,
    limit: int,
) -> RankedPage:
    """One page of the caller's readable documents that match, best first."""
    window = _window(principal, search, engine, filters)
    query = _page_query(_best(window, search, engine, cursor, limit))
    plan_for_the_words(session)
    rows = session.execute(query).all()
    return RankedPage(
        hits=[Hit(row[0], row[1], float(row[2])) for row in rows],
        older_matches_unranked=bool(rows) and int(rows[0][3]) > engine.rank_window,
    )


def cursor_after(hit: Hit) -> RankCursor:
    return RankCursor(hit.rank, hit.document.created_at, hit.document.id)
