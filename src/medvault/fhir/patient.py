"""Patient use cases: read and search, in the caller's scope, audited as on REST."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.policy import resolve_patient_scope
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.fhir import repository
from medvault.fhir.mapping.patient import to_resource
from medvault.fhir.repository import IdentifierToken, PatientFilters
from medvault.fhir.wire import search as fhir_search
from medvault.fhir.wire.bundle import searchset
from medvault.fhir.wire.references import parse_uuid, uuid_or_404
from medvault.kit.text import bounded_words
from medvault.patients import service as patient_service

# Registry rows never change, so "last updated" is when they were registered.
SORTS = {"-_lastUpdated": True, "_lastUpdated": False}
DEFAULT_SORT = "-_lastUpdated"


def read(
    *, session: Session, principal: Principal, raw_id: str, context: AuditContext
) -> dict[str, Any]:
    patient = patient_service.get(
        session=session,
        principal=principal,
        patient_id=uuid_or_404(raw_id, "Patient"),
        context=context,
    )
    return to_resource(patient)


def parse_search(
    params: Sequence[tuple[str, str]], *, strict: bool
) -> tuple[PatientFilters, fhir_search.ParsedSearch]:
    ids: list[frozenset[uuid.UUID]] = []
    identifiers: list[frozenset[IdentifierToken]] = []
    names: list[frozenset[str]] = []
    families: list[frozenset[str]] = []
    givens: list[frozenset[str]] = []
    birthdates: list[tuple[fhir_search.DateBound, ...]] = []

    def on_id(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("_id", modifier)
        parsed = (parse_uuid(v) for v in fhir_search.split_values(value))
        ids.append(frozenset(p for p in parsed if p is not None))

    def on_identifier(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("identifier", modifier)
        tokens = set()
        for item in fhir_search.split_values(value):
            token = fhir_search.token(item)
            # "|value" means an identifier with no system: every registry one has one.
            if token.system == "":
                continue
            tokens.add(IdentifierToken(token.system, token.code))
        identifiers.append(frozenset(tokens))

    def strings(target: list[frozenset[str]], name: str) -> fhir_search.Handler:
        def handle(modifier: str | None, value: str) -> None:
            fhir_search.no_modifier(name, modifier)
            words = (v.strip() for v in fhir_search.split_values(value))
            # Each word is an AND'ed LIKE pair: 1,500 of them overflowed SQLite's parser.
            target.append(frozenset(w for w in words if bounded_words(w, what=name)))

        return handle

    def on_birthdate(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("birthdate", modifier)
        birthdates.append(fhir_search.date_bounds(value, name="birthdate", dates_only=True))

    parsed = fhir_search.parse(
        params,
        handlers={
            "_id": on_id,
            "identifier": on_identifier,
            "name": strings(names, "name"),
            "family": strings(families, "family"),
            "given": strings(givens, "given"),
            "birthdate": on_birthdate,
        },
        sorts=SORTS,
        default_sort=DEFAULT_SORT,
        strict=strict,
    )
    filters = PatientFilters(
        ids=tuple(ids),
        identifiers=tuple(identifiers),
        names=tuple(names),
        families=tuple(families),
        givens=tuple(givens),
        birthdates=tuple(birthdates),
    )
    return filters, parsed


def search(
    *,
    session: Session,
    principal: Principal,
    params: Sequence[tuple[str, str]],
    strict: bool,
    context: AuditContext,
    base: str,
) -> dict[str, Any]:
    filters, parsed = parse_search(params, strict=strict)
    # The scope from the clinical database (care teams), then the search among those
    # ids in the patient database: names are never joined to clinical rows in SQL.
    scope = resolve_patient_scope(session, principal)
    total = repository.count_patients(session, scope, filters) if parsed.total else None
    rows = (
        repository.page_patients(session, scope, filters, repository.page_window(parsed))
        if parsed.count
        else []
    )
    page = fhir_search.page_of(
        rows, parsed, lambda row: fhir_search.Position(row.created_at, row.id)
    )
    # As on REST: that a search happened and how many it found, never the names searched.
    audit.record(
        session=session,
        context=context,
        action="patient.search",
        resource_type="Patient",
        details={"results": len(page.rows)},
    )
    return searchset(
        entries=[(f"{base}/Patient/{p.id}", to_resource(p)) for p in page.rows],
        total=total,
        links=fhir_search.links(f"{base}/Patient", parsed, page, default_sort=DEFAULT_SORT),
        ignored=parsed.ignored,
    )
