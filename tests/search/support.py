"""Search test helpers: give a document extracted text, walk search pages."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.documents import derived
from medvault.documents.models import DerivedKind, Document, DocumentVersion
from medvault.runtime import Runtime
from medvault.search.index import index_document


def store_text(runtime: Runtime, document_id: str, text: str) -> None:
    """Seal ``text`` as the current version's extracted text and index it, as the
    extraction job does (the real encrypted store, the real index)."""
    sealed = derived.seal(runtime, text.encode("utf-8"))
    with runtime.clinical.session() as session:
        document = session.get(Document, uuid.UUID(document_id))
        assert document is not None
        version = session.scalar(
            select(DocumentVersion).where(
                DocumentVersion.document_id == document.id,
                DocumentVersion.version == document.current_version,
            )
        )
        assert version is not None
        stale = derived.record(
            session, version, DerivedKind.TEXT, sealed, media_type=derived.TEXT_MEDIA_TYPE
        )
        index_document(session, runtime, document.id)
        session.commit()
    for key in stale:
        runtime.blobs.delete(key)


def search(client: TestClient, q: str, **params: Any) -> list[str]:
    """Every id a search finds, following next_cursor to the end."""
    seen: list[str] = []
    cursor = None
    while True:
        query = {"q": q, **params}
        if cursor:
            query["cursor"] = cursor
        response = client.get("/api/v1/documents", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
