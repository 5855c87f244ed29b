"""The search use case: find the caller's documents by words, rank, excerpt, audit.

Flushes and never commits, like every service; the route commits the audit event.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from medvault.access.policy import Permission, allows
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.crypto.errors import CryptoError
from medvault.documents import derived
from medvault.documents import service as documents
from medvault.documents.models import (
    DerivedKind,
    DocumentStatus,
    VersionDerivative,
)
from medvault.documents.repository import ListFilters
from medvault.kit.problems import Problem
from medvault.runtime import Runtime
from medvault.search import query, snippets, terms
from medvault.search.schemas import SearchHit, SearchPage, SnippetSegment
from medvault.storage.base import BlobStoreError

logger = logging.getLogger("medvault.search")


def engine_for(runtime: Runtime, principal: Principal) -> query.Engine:
    """How to search for ``principal``: content only where they may read it."""
    settings = runtime.settings
    return query.Engine(
        sqlite=runtime.clinical.is_sqlite,
        text_config=settings.search_text_config,
        content=settings.fulltext and allows(principal, Permission.CONTENT_READ),
        rank_window=settings.search_rank_window,
    )


def _texts(session: Session, hits: list[query.Hit]) -> dict[uuid.UUID, VersionDerivative]:
    """The text artifacts of the page's versions, in one query."""
    wanted = [hit.version.id for hit in hits]
    if not wanted:
        return {}
    found = session.scalars(
        select(VersionDerivative).where(
            VersionDerivative.version_id.in_(wanted),
            VersionDerivative.kind == DerivedKind.TEXT.value,
        )
    )
    return {artifact.version_id: artifact for artifact in found}


def _text_of(runtime: Runtime, hit: query.Hit, artifact: VersionDerivative | None) -> str | None:
    """The hit's extracted text, decrypted, for its snippet; None if there is none."""
    if hit.document.status != DocumentStatus.CURRENT.value:
        return None  # its content is refused (410): no excerpt of it either
    if artifact is None:
        return None
    try:
        return derived.open_artifact(runtime, artifact).decode("utf-8", "replace")
    except (CryptoError, BlobStoreError, Problem):
        logger.warning("no snippet from the text of document %s", hit.document.id)
        return None


def audit_search(
    *,
    session: Session,
    runtime: Runtime,
    context: AuditContext,
    search: terms.SearchText,
    filters: ListFilters,
    results: int,
    full_text: bool,
) -> None:
    """The ``document.list`` event of a search: that it happened, never its words."""
    audit.record(
        session=session,
        context=context,
        action="document.list",
        resource_type="Document",
        patient_id=filters.patient_id,
        details={
            "results": results,
            "document_type": filters.document_type,
            "searched": True,
            "full_text": full_text,
            "sort": query.RELEVANCE,
            # Correlates equal searches; the words need MEDVAULT_SECRET_KEY to guess.
            "search_digest": terms.digest(runtime.secret_key, search),
        },
    )


def search_page(
    *,
    session: Session,
    runtime: Runtime,
    principal: Principal,
    text: str,
    filters: ListFilters,
    cursor: str | None,
    limit: int,
    context: AuditContext,
) -> SearchPage:
    """One page of the caller's readable documents matching ``text``, best first."""
    search = terms.parse(text)
    engine = engine_for(runtime, principal)
    ranked = query.page(
        session,
        principal,
        search=search,
        engine=engine,
        filters=filters,
        cursor=query.RankCursor.decode(cursor) if cursor else None,
        limit=limit + 1,
    )
    more = len(ranked.hits) > limit
    hits = ranked.hits[:limit]
    audit_search(
        session=session,
        runtime=runtime,
        context=context,
        search=search,
        filters=filters,
        results=len(hits),
        full_text=engine.content,
    )
    items = []
    artifacts = _texts(session, hits) if engine.content else {}
    matcher = snippets.Matcher.for_words(search.words)
    for hit in hits:
        content = _text_of(runtime, hit, artifacts.get(hit.version.id))
        sources = [content, hit.document.description, hit.document.title]
        segments = snippets.snippet(sources, matcher)
        out = documents.to_out(hit.document, hit.version)
        items.append(
            SearchHit(
                **out.model_dump(),
                rank=hit.rank,
                snippet=[SnippetSegment(text=s.text, match=s.match) for s in segments],
            )
        )
    return SearchPage(
        items=items,
        next_cursor=query.cursor_after(hits[-1]).encode() if more else None,
        full_text=engine.content,
        older_matches_unranked=ranked.older_matches_unranked,
        rank_window=engine.rank_window,
    )
