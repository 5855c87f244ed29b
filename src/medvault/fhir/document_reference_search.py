"""DocumentReference search: one page of the versions the caller may read.

Built on the access policy's readable-documents query (see ``fhir.repository``), and
audited as the REST listing is (``document.list``), so FHIR sees no more than REST.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents.models import Document, DocumentVersion
from medvault.fhir import repository
from medvault.fhir.mapping import document_reference as mapping
from medvault.fhir.mapping.codes import CATEGORY_SYSTEM, LOINC
from medvault.fhir.repository import DocumentFilters
from medvault.fhir.wire import search as fhir_search
from medvault.fhir.wire.bundle import searchset
from medvault.fhir.wire.outcome import InvalidSearch
from medvault.fhir.wire.references import DocumentId, parse_document_id, parse_uuid, split_reference
from medvault.kit.keyset import InvalidCursor
from medvault.runtime import Runtime
from medvault.search import query as search_query
from medvault.search import service as search_service
from medvault.search import terms

# "relevance" (best first) is the order of a _content search that names no _sort.
SORTS = {"-date": True, "date": False, "relevance": True}
DEFAULT_SORT = "-date"
STATUSES = frozenset({"current", "superseded", "entered-in-error"})


def _patient_ids(value: str, base: str) -> frozenset[uuid.UUID]:
    found = set()
    for item in fhir_search.split_values(value):
        target = split_reference(item, base) if "/" in item else ("Patient", item)
        patient_id = parse_uuid(target[1]) if target and target[0] == "Patient" else None
        if patient_id is not None:
            found.add(patient_id)
    return frozenset(found)


def _content_text(value: str) -> terms.SearchText:
    # Comma-separated values are alternatives, as for every FHIR string parameter.
    alternatives = fhir_search.split_values(value)
    try:
        return terms.parse(" or ".join(alternatives))
    except terms.InvalidSearchText as exc:
        raise InvalidSearch(f"_content: {exc.detail}") from exc


def parse_search(
    params: Sequence[tuple[str, str]],
    *,
    strict: bool,
    base: str,
    engine: search_query.Engine | None = None,
) -> tuple[DocumentFilters, fhir_search.ParsedSearch]:
    ids: list[frozenset[DocumentId]] = []
    patients: list[frozenset[uuid.UUID]] = []
    types: list[frozenset[str]] = []
    categories: list[frozenset[str]] = []
    dates: list[tuple[fhir_search.DateBound, ...]] = []
    statuses: list[frozenset[str]] = []
    contents: list[terms.SearchText] = []

    def on_id(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("_id", modifier)
        parsed = (parse_document_id(v) for v in fhir_search.split_values(value))
        ids.append(frozenset(p for p in parsed if p is not None))

    def on_patient(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("patient", modifier, allowed=("Patient",))
        patients.append(_patient_ids(value, base))

    def on_type(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("type", modifier)
        codes: set[str] = set()
        for item in fhir_search.split_values(value):
            token = fhir_search.token(item)
            if token.system not in (None, LOINC):
                continue  # every type is LOINC: another system matches nothing
            if token.code is None:
                return  # "http://loinc.org|": any LOINC type, so no filter at all
            codes.add(token.code)
        types.append(frozenset(codes))

    def on_category(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("category", modifier)
        codes: set[str] = set()
        for item in fhir_search.split_values(value):
            token = fhir_search.token(item)
            if token.system not in (None, CATEGORY_SYSTEM):
                continue
            if token.code is None:
                return
            codes.add(token.code)
        categories.append(frozenset(codes))

    def on_date(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("date", modifier)
        dates.append(fhir_search.date_bounds(value, name="date"))

    def on_status(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("status", modifier)
        statuses.append(frozenset(fhir_search.split_values(value)) & STATUSES)

    def on_content(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("_content", modifier)
        if contents:
            raise InvalidSearch("_content may be given once (use commas for alternatives).")
        contents.append(_content_text(value))

    parsed = fhir_search.parse(
        params,
        handlers={
            "_id": on_id,
            "patient": on_patient,
            "subject": on_patient,
            "type": on_type,
            "category": on_category,
            "date": on_date,
            "status": on_status,
            "_content": on_content,
        },
        sorts=SORTS,
        default_sort=DEFAULT_SORT,
        strict=strict,
    )
    explicit_sort = any(name == "_sort" for name, _ in params)
    if contents and not explicit_sort:
        parsed.sort, parsed.descending = "relevance", True
        if parsed.cursor is not None and parsed.cursor.sort != "relevance":
            raise InvalidCursor("Follow the Bundle's next or prev link as it is.")
    if parsed.sort == "relevance" and not contents:
        raise InvalidSearch("_sort=relevance needs _content, the words to search for.")
    filters = DocumentFilters(
        ids=tuple(ids),
        patients=tuple(patients),
        types=tuple(types),
        categories=tuple(categories),
        dates=tuple(dates),
        statuses=tuple(statuses),
        content=(
            search_query.ContentQuery(contents[0], engine or search_query.Engine(sqlite=True))
            if contents
            else None
        ),
    )
    return filters, parsed


def _only(groups: Sequence[frozenset[Any]]) -> Any:
    """The single value the search is narrowed to, if it is narrowed to exactly one."""
    if len(groups) == 1 and len(groups[0]) == 1:
        return next(iter(groups[0]))
    return None


def search(
    *,
    session: Session,
    runtime: Runtime,
    principal: Principal,
    params: Sequence[tuple[str, str]],
    strict: bool,
    context: AuditContext,
    base: str,
) -> dict[str, Any]:
    """A searchset of the DocumentReferences the caller may read, one page at a time."""
    engine = search_service.engine_for(runtime, principal)
    filters, parsed = parse_search(params, strict=strict, base=base, engine=engine)
    total = repository.count_documents(session, principal, filters) if parsed.total else None
    by_relevance = parsed.sort == "relevance"
    rows = (
        repository.page_documents(
            session, principal, filters, repository.page_window(parsed), by_relevance=by_relevance
        )
        if parsed.count
        else []
    )

    def position(row: tuple[Document, DocumentVersion, float | None]) -> fhir_search.Position:
        value = row[2] if by_relevance else row[1].created_at
        return fhir_search.Position(value, row[1].id)

    page = fhir_search.page_of(rows, parsed, position)
    details: dict[str, Any] = {"results": len(page.rows), "document_type": _only(filters.types)}
    if filters.content is not None:
        # That a full-text search happened, never its words (search.service's digest).
        details |= {
            "searched": True,
            "full_text": engine.content,
            "search_digest": terms.digest(runtime.secret_key, filters.content.search),
        }
    audit.record(
        session=session,
        context=context,
        action="document.list",
        resource_type="Document",
        patient_id=_only(filters.patients),
        # Codes and counts only: never free text a client might have put in a filter.
        details=details,
    )
    draft_ids = repository.drafts(
        session, [doc.id for doc, ver, _ in page.rows if ver.version == doc.current_version]
    )
    entries = []
    for document, version, _ in page.rows:
        draft = document.id in draft_ids and version.version == document.current_version
        item = mapping.to_resource(document, version, base=base, draft=draft)
        entries.append((f"{base}/DocumentReference/{item['id']}", item))
    return searchset(
        entries=entries,
        total=total,
        links=fhir_search.links(
            f"{base}/DocumentReference", parsed, page, default_sort=DEFAULT_SORT
        ),
        ignored=parsed.ignored,
    )
