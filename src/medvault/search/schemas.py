"""Search result shapes for the REST API (the portal renders the same objects)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from medvault.documents.schemas import DocumentOut


class SnippetSegment(BaseModel):
    text: str
    match: bool = Field(description="Whether this piece is a searched word (to highlight)")


class SearchHit(DocumentOut):
    rank: float = Field(
        description="Relevance: higher is better. Comparable only within one search on one "
        "vault (PostgreSQL and SQLite vaults compute it differently)."
    )
    snippet: list[SnippetSegment] = Field(
        description="An excerpt with the matching words marked, in order: from the "
        "document's extracted text when the caller may read content, else from its "
        "title or description. Plain text pieces, never HTML."
    )


class SearchPage(BaseModel):
    items: list[SearchHit]
    next_cursor: str | None
    full_text: bool = Field(
        description="Whether document content was searched (false: titles, descriptions "
        "and file names only, because content indexing is off or the caller may not "
        "read content)"
    )
    older_matches_unranked: bool = Field(
        default=False,
        description="Whether more of the caller's documents match than one search ranks: "
        "the results are the best of the newest `rank_window` matches, and older ones "
        "are left out. Narrow the search (more words, a patient, a type or dates) to "
        "reach them.",
    )
    rank_window: int = Field(
        description="How many of the newest matching documents a search ranks "
        "(MEDVAULT_SEARCH_RANK_WINDOW)"
    )
