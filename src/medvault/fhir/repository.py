"""Every FHIR query. Documents and patients start from the access policy's readable
queries, so a FHIR search can only ever see what the caller may see on REST.

Searches page with keyset cursors in both directions: a page after the last row of
the previous one, or before the first row of the next one (for ``prev`` links),
always ordered by (sort column, id) so no row is skipped or repeated.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, false, func, literal, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from medvault.access.policy import PatientScope, readable_documents, readable_patients
from medvault.audit.models import AuditEvent
from medvault.auth.principal import Principal
from medvault.documents.models import Document, DocumentStatus, DocumentVersion
from medvault.fhir.mapping.codes import CATEGORY_BY_TYPE, OTHER_CATEGORY, types_in_category
from medvault.fhir.models import BinaryDraft
from medvault.fhir.wire.references import DocumentId
from medvault.fhir.wire.search import DateBound, ParsedSearch, Position
from medvault.patients.models import Patient
from medvault.search import query as search_query
from medvault.search.query import ContentQuery

T = TypeVar("T")
Group = frozenset[T]


def _date_condition(column: Any, bound: DateBound) -> ColumnElement[bool]:
    low, high = bound.low, bound.high
    match bound.prefix:
        case "eq":
            return and_(column >= low, column < high)
        case "ne":
            return or_(column < low, column >= high)
        case "gt" | "sa":
            return column >= high  # type: ignore[no-any-return]  # a SQL expression
        case "lt" | "eb":
            return column < low  # type: ignore[no-any-return]  # a SQL expression
        case "ge":
            return column >= low  # type: ignore[no-any-return]  # a SQL expression
        case "le":
            return column < high  # type: ignore[no-any-return]  # a SQL expression
    raise ValueError(bound.prefix)


def _any_of(conditions: Iterable[ColumnElement[bool]]) -> ColumnElement[bool]:
    listed = list(conditions)
    return or_(*listed) if listed else false()


def _dates(column: Any, groups: Sequence[Sequence[DateBound]]) -> list[ColumnElement[bool]]:
    return [_any_of(_date_condition(column, bound) for bound in group) for group in groups]


@dataclass(frozen=True)
class Window:
    """Which page: after a position, before one, or the first; and the order."""

    descending: bool
    after: Position | None = None
    before: Position | None = None
    limit: int = 20


def page_window(parsed: ParsedSearch) -> Window:
    """One row more than the parsed search's page, to learn whether another page follows."""
    cursor = parsed.cursor
    return Window(
        descending=parsed.descending,
        after=cursor.position if cursor and not cursor.backwards else None,
        before=cursor.position if cursor and cursor.backwards else None,
        limit=parsed.count + 1,
    )


def _keyset(
    query: Select[Any], column: Any, id_column: Any, window: Window
) -> tuple[Select[Any], bool]:
    """Apply the window; True if rows come back reversed (a ``before`` page)."""
    backwards = window.before is not None
    anchor = window.before or window.after
    # Walking backwards is walking the opposite order forwards, then flipping the page.
    descending = window.descending != backwards
    if anchor is not None:
        row = tuple_(column, id_column)
        bound = tuple_(literal(anchor.value, column.type), literal(anchor.id, id_column.type))
        query = query.where(row < bound if descending else row > bound)
    order = (column.desc(), id_column.desc()) if descending else (column.asc(), id_column.asc())
    return query.order_by(*order).limit(window.limit), backwards


def _count(session: Session, query: Select[Any], mapper: type[Any] | None = None) -> int:
    counted = select(func.count()).select_from(query.order_by(None).subquery())
    # ``mapper``: which database a count of a subquery goes to (``Patient``: patients).
    bind = {"mapper": mapper} if mapper is not None else None
    return int(session.scalar(counted, bind_arguments=bind) or 0)


# -- DocumentReference ---------------------------------------------------------------


@dataclass(frozen=True)
class DocumentFilters:
    """AND of OR-groups: each tuple item is one search parameter occurrence."""

    ids: tuple[Group[DocumentId], ...] = ()
    patients: tuple[Group[uuid.UUID], ...] = ()
    types: tuple[Group[str], ...] = ()
    categories: tuple[Group[str], ...] = ()
    dates: tuple[tuple[DateBound, ...], ...] = ()
    statuses: tuple[Group[str], ...] = ()
    # _content: full-text words, matched on each document's current version.
    content: ContentQuery | None = None


def _document_rows(principal: Principal) -> Select[tuple[Document, DocumentVersion]]:
    """Every version of every readable document: one DocumentReference each."""
    return (
        readable_documents(principal)
        .add_columns(DocumentVersion)
        .join(DocumentVersion, DocumentVersion.document_id == Document.id)
    )


def _id_condition(document_id: DocumentId) -> ColumnElement[bool]:
    if document_id.version is None:
        return and_(
            Document.id == document_id.document_id,
            DocumentVersion.version == Document.current_version,
        )
    return and_(
        Document.id == document_id.document_id,
        DocumentVersion.version == document_id.version,
        DocumentVersion.version < Document.current_version,
    )


def _status_condition(status: str) -> ColumnElement[bool]:
    live = Document.status == DocumentStatus.CURRENT.value
    if status == "current":
        return and_(live, DocumentVersion.version == Document.current_version)
    if status == "superseded":
        return and_(live, DocumentVersion.version < Document.current_version)
    if status == "entered-in-error":
        return Document.status == DocumentStatus.DELETED.value
    return false()


def _category_condition(category: str) -> ColumnElement[bool]:
    if category == OTHER_CATEGORY:
        return Document.document_type.not_in(sorted(CATEGORY_BY_TYPE))
    types = types_in_category(category)
    return Document.document_type.in_(sorted(types)) if types else false()


def _filtered(principal: Principal, filters: DocumentFilters) -> Select[Any]:
    query: Select[Any] = _document_rows(principal)
    for ids in filters.ids:
        query = query.where(_any_of(_id_condition(i) for i in ids))
    for patients in filters.patients:
        query = query.where(Document.patient_id.in_(sorted(patients)))
    for types in filters.types:
        query = query.where(Document.document_type.in_(sorted(types)))
    for categories in filters.categories:
        query = query.where(_any_of(_category_condition(c) for c in categories))
    for statuses in filters.statuses:
        query = query.where(_any_of(_status_condition(s) for s in statuses))
    for condition in _dates(DocumentVersion.created_at, filters.dates):
        query = query.where(condition)
    if filters.content is not None:
        # The index holds each document's current version: superseded ones never match.
        hits = search_query.matches(filters.content.search, filters.content.engine)
        query = (
            query.add_columns(hits.c.rank)
            .join(hits, hits.c.document_id == Document.id)
            .where(DocumentVersion.version == Document.current_version)
        )
    return query


def count_documents(session: Session, principal: Principal, filters: DocumentFilters) -> int:
    if filters.content is not None:
        search_query.plan_for_the_words(session)
    return _count(session, _filtered(principal, filters))


def page_documents(
    session: Session,
    principal: Principal,
    filters: DocumentFilters,
    window: Window,
    *,
    by_relevance: bool = False,
) -> list[tuple[Document, DocumentVersion, float | None]]:
    """A page of (document, version, rank); rank is None without ``_content``."""
    query = _filtered(principal, filters)
    if by_relevance:
        if filters.content is None:
            raise ValueError("relevance needs _content")
        rank = list(query.selected_columns)[-1]  # the rank _filtered added last
        query, backwards = _keyset(query, rank, DocumentVersion.id, window)
    else:
        query, backwards = _keyset(query, DocumentVersion.created_at, DocumentVersion.id, window)
    searched = filters.content is not None
    if searched:
        search_query.plan_for_the_words(session)
    rows = [(row[0], row[1], float(row[2]) if searched else None) for row in session.execute(query)]
    return rows[::-1] if backwards else rows


def version_by_id(session: Session, version_id: uuid.UUID) -> DocumentVersion | None:
    return session.get(DocumentVersion, version_id)


def drafts(session: Session, document_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these documents are Binaries still waiting for their DocumentReference."""
    wanted = sorted(set(document_ids))
    if not wanted:
        return set()
    return set(
        session.scalars(select(BinaryDraft.document_id).where(BinaryDraft.document_id.in_(wanted)))
    )


def draft(session: Session, document_id: uuid.UUID) -> BinaryDraft | None:
    return session.get(BinaryDraft, document_id)


# -- Patient ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentifierToken:
    system: str | None
    value: str | None


@dataclass(frozen=True)
class PatientFilters:
    ids: tuple[Group[uuid.UUID], ...] = ()
    identifiers: tuple[Group[IdentifierToken], ...] = ()
    names: tuple[Group[str], ...] = ()
    families: tuple[Group[str], ...] = ()
    givens: tuple[Group[str], ...] = ()
    birthdates: tuple[tuple[DateBound, ...], ...] = ()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _starts(column: InstrumentedAttribute[str], text: str) -> ColumnElement[bool]:
    return func.lower(column).like(_escape_like(text.lower()) + "%", escape="\\")


def _name_condition(text: str) -> ColumnElement[bool]:
    # Each word must start the given or the family name: "ann smi" finds Ann Smith.
    words = text.split()
    return and_(
        *(or_(_starts(Patient.family_name, w), _starts(Patient.given_name, w)) for w in words)
    )


def _identifier_condition(token: IdentifierToken) -> ColumnElement[bool]:
    parts = []
    if token.system is not None:
        parts.append(Patient.identifier_system == token.system)
    if token.value is not None:
        parts.append(Patient.identifier_value == token.value)
    return and_(*parts) if parts else false()


def _patients(scope: PatientScope, filters: PatientFilters) -> Select[Any]:
    query: Select[Any] = readable_patients(scope)
    for ids in filters.ids:
        query = query.where(Patient.id.in_(sorted(ids)))
    for identifiers in filters.identifiers:
        query = query.where(_any_of(_identifier_condition(t) for t in identifiers))
    for names in filters.names:
        query = query.where(_any_of(_name_condition(n) for n in names))
    for families in filters.families:
        query = query.where(_any_of(_starts(Patient.family_name, f) for f in families))
    for givens in filters.givens:
        query = query.where(_any_of(_starts(Patient.given_name, g) for g in givens))
    for condition in _dates(Patient.birth_date, filters.birthdates):
        query = query.where(condition)
    return query


def count_patients(session: Session, scope: PatientScope, filters: PatientFilters) -> int:
    return _count(session, _patients(scope, filters), Patient)


def page_patients(
    session: Session, scope: PatientScope, filters: PatientFilters, window: Window
) -> list[Patient]:
    query, backwards = _keyset(_patients(scope, filters), Patient.created_at, Patient.id, window)
    rows = list(session.scalars(query))
    return rows[::-1] if backwards else rows


# -- AuditEvent ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    """Search filters; who reads which events is ``access.audit_reach``'s base query."""

    ids: tuple[Group[int], ...] = ()
    patients: tuple[Group[uuid.UUID], ...] = ()
    agents: tuple[Group[str], ...] = ()
    entities: tuple[Group[tuple[str, str]], ...] = ()
    subtypes: tuple[Group[str], ...] = ()
    outcomes: tuple[Group[str], ...] = ()
    dates: tuple[tuple[DateBound, ...], ...] = ()


def _audit(readable: Select[AuditEvent], filters: AuditFilters) -> Select[Any]:
    query: Select[Any] = readable
    for ids in filters.ids:
        query = query.where(AuditEvent.id.in_(sorted(ids)))
    for patients in filters.patients:
        query = query.where(AuditEvent.patient_id.in_(sorted(patients)))
    for agents in filters.agents:
        query = query.where(AuditEvent.actor_id.in_(sorted(agents)))
    for entities in filters.entities:
        query = query.where(
            _any_of(
                and_(AuditEvent.resource_type == kind, AuditEvent.resource_id == rid)
                for kind, rid in entities
            )
        )
    for subtypes in filters.subtypes:
        query = query.where(AuditEvent.action.in_(sorted(subtypes)))
    for outcomes in filters.outcomes:
        query = query.where(AuditEvent.outcome.in_(sorted(outcomes)))
    for condition in _dates(AuditEvent.occurred_at, filters.dates):
        query = query.where(condition)
    return query


def count_audit_events(
    session: Session, readable: Select[AuditEvent], filters: AuditFilters
) -> int:
    return _count(session, _audit(readable, filters))


def page_audit_events(
    session: Session, readable: Select[AuditEvent], filters: AuditFilters, window: Window
) -> list[AuditEvent]:
    # Id order is the order events were written (see audit.queries); ties are impossible.
    query = _audit(readable, filters)
    backwards = window.before is not None
    anchor = window.before or window.after
    descending = window.descending != backwards
    if anchor is not None:
        query = query.where(AuditEvent.id < anchor.id if descending else AuditEvent.id > anchor.id)
    query = query.order_by(AuditEvent.id.desc() if descending else AuditEvent.id.asc())
    rows = list(session.scalars(query.limit(window.limit)))
    return rows[::-1] if backwards else rows


def audit_event(session: Session, readable: Select[AuditEvent], event_id: int) -> AuditEvent | None:
    return session.scalar(readable.where(AuditEvent.id == event_id))


def audit_event_patient(session: Session, event_id: int) -> uuid.UUID | None:
    """The patient an event is about (to audit a refused read of it), if any."""
    return session.scalar(select(AuditEvent.patient_id).where(AuditEvent.id == event_id))


def expired_drafts(session: Session, older_than: datetime, limit: int) -> list[BinaryDraft]:
    """Drafts stored before ``older_than``, oldest first."""
    return list(
        session.scalars(
            select(BinaryDraft)
            .where(BinaryDraft.created_at < older_than)
            .order_by(BinaryDraft.created_at, BinaryDraft.document_id)
            .limit(limit)
        )
    )
