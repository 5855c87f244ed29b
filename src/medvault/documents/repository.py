"""Every document query. Lookups start from the access policy's readable query."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, select, update
from sqlalchemy.orm import Session

from medvault.access.policy import readable_documents
from medvault.auth.principal import Principal
from medvault.documents.models import Document, DocumentStatus, DocumentVersion, VersionState
from medvault.documents.ordering import SORTS, DocumentSort
from medvault.kit.keyset import SortCursor, beyond


@dataclass(frozen=True)
class ListFilters:
    patient_id: uuid.UUID | None = None
    document_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    status: DocumentStatus | None = DocumentStatus.CURRENT


def _with_current_version(principal: Principal) -> Select[Document, DocumentVersion]:
    return (
        readable_documents(principal)
        .add_columns(DocumentVersion)
        .join(
            DocumentVersion,
            and_(
                DocumentVersion.document_id == Document.id,
                DocumentVersion.version == Document.current_version,
            ),
        )
    )


def readable(
    session: Session, principal: Principal, document_id: uuid.UUID
) -> tuple[Document, DocumentVersion] | None:
    row = session.execute(
        _with_current_version(principal).where(Document.id == document_id)
    ).one_or_none()
    return (row[0], row[1]) if row else None


def filtered(principal: Principal, filters: ListFilters) -> Select[Document, DocumentVersion]:
    """The caller's readable documents (with their current version) that pass ``filters``.

    The base of every listing and of every search (``search.query`` joins its matches
    onto it), so both see exactly the same documents.
    """
    query = _with_current_version(principal)
    if filters.patient_id is not None:
        query = query.where(Document.patient_id == filters.patient_id)
    if filters.document_type is not None:
        query = query.where(Document.document_type == filters.document_type)
    if filters.created_after is not None:
        query = query.where(Document.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(Document.created_at < filters.created_before)
    if filters.status is not None:
        query = query.where(Document.status == filters.status.value)
    return query


def page(
    session: Session,
    principal: Principal,
    *,
    filters: ListFilters,
    cursor: SortCursor | None,
    limit: int,
    order: DocumentSort = DocumentSort.NEWEST,
) -> list[tuple[Document, DocumentVersion]]:
    query = filtered(principal, filters)
    spec = SORTS[order]
    if cursor is not None:
        query = query.where(beyond(cursor, spec.column, Document.id, descending=spec.descending))
    if spec.descending:
        query = query.order_by(spec.column.desc(), Document.id.desc())
    else:
        query = query.order_by(spec.column.asc(), Document.id.asc())
    query = query.limit(limit)
    return [(row[0], row[1]) for row in session.execute(query)]


def versions(session: Session, document_id: uuid.UUID) -> list[DocumentVersion]:
    return list(
        session.scalars(
            select(DocumentVersion)
            .where(DocumentVersion.document_id == document_id)
            .order_by(DocumentVersion.version.desc())
        )
    )


def version(session: Session, document_id: uuid.UUID, number: int) -> DocumentVersion | None:
    return session.scalar(
        select(DocumentVersion).where(
            DocumentVersion.document_id == document_id, DocumentVersion.version == number
        )
    )


def version_by_id(session: Session, version_id: uuid.UUID) -> DocumentVersion | None:
    return session.get(DocumentVersion, version_id)


def find_duplicate(session: Session, patient_id: uuid.UUID, sha256: str) -> Document | None:
    """A live document of this patient that has any version with these exact bytes."""
    return session.scalar(
        select(Document)
        .join(DocumentVersion, DocumentVersion.document_id == Document.id)
        .where(
            Document.patient_id == patient_id,
            Document.status == DocumentStatus.CURRENT.value,
            DocumentVersion.sha256 == sha256,
        )
        .order_by(Document.created_at)
        .limit(1)
    )


def lock_current_version(session: Session, document_id: uuid.UUID) -> int:
    """Lock the document row for this transaction and return its fresh version number.

    PostgreSQL serialises concurrent version uploads here instead of failing them;
    SQLite needs no lock because its write transactions already run one at a time.
    """
    number = session.scalar(
        select(Document.current_version).where(Document.id == document_id).with_for_update()
    )
    if number is None:
        raise LookupError(document_id)
    return number


def advance_version(session: Session, document_id: uuid.UUID, expected: int, now: datetime) -> bool:
    """Compare-and-set the current version number; False if someone else got there first."""
    result = session.execute(
        update(Document)
        .where(Document.id == document_id, Document.current_version == expected)
        .values(current_version=expected + 1, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # CursorResult has rowcount


def patient_of(session: Session, document_id: uuid.UUID) -> uuid.UUID | None:
    return session.scalar(select(Document.patient_id).where(Document.id == document_id))


def mark_corrupt(session: Session, version_id: uuid.UUID) -> None:
    session.execute(
        update(DocumentVersion)
        .where(DocumentVersion.id == version_id)
        .values(state=VersionState.CORRUPT.value)
    )


def versions_after(
    session: Session, after: uuid.UUID | None, *, limit: int
) -> list[DocumentVersion]:
    """A batch of versions in id order, for jobs that walk every version."""
    query = select(DocumentVersion).order_by(DocumentVersion.id).limit(limit)
    if after is not None:
        query = query.where(DocumentVersion.id > after)
    return list(session.scalars(query))
