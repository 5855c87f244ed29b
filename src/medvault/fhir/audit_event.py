"""AuditEvent use cases: the audit log as FHIR, for auditors and for patients.

Which events a caller reads is decided by ``access.audit_reach``: whole-log readers
(auditors, tokens with ``audit:read`` and no ``patient/`` scope) read every event in
full; a patient principal (a patient user, or a token bound to its patient by
``patient/`` scopes) reads the events about its own record, in the patient-facing
projection (agent by role, no address, user agent, ids or details); an unbound
``patient/`` token finds nothing. Every query starts from ``readable_audit_events``.
Reading the audit log is itself audited (``audit.read``), exactly as on the REST API.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.audit_reach import (
    own_patient,
    readable_audit_events,
    reads_as_patient,
    require_audit_events,
)
from medvault.access.denials import Denial, denied
from medvault.audit import service as audit
from medvault.audit.access_history import actor_for, resolve_actors
from medvault.audit.context import AuditContext
from medvault.audit.models import AuditEvent
from medvault.auth.principal import Principal
from medvault.fhir import repository
from medvault.fhir.mapping.audit_event import (
    ACTION_SYSTEM,
    OUTCOME_BY_CODE,
    VAULT_TYPE_BY_FHIR,
    to_patient_resource,
    to_resource,
)
from medvault.fhir.mapping.codes import ACTOR_SYSTEM
from medvault.fhir.repository import AuditFilters
from medvault.fhir.wire import search as fhir_search
from medvault.fhir.wire.bundle import searchset
from medvault.fhir.wire.references import parse_uuid, split_reference
from medvault.kit.problems import NotFound

SORTS = {"-date": True, "date": False}
DEFAULT_SORT = "-date"
READ_ACTION = "audit.read"


def _event_id(raw: str) -> int | None:
    text = raw.strip()
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 2**63 else None


def _render(
    auth_session: Session, principal: Principal, events: Sequence[AuditEvent]
) -> list[dict[str, Any]]:
    """Each event as the caller may see it: in full, or the patient-facing projection."""
    patient_id = own_patient(principal)
    if not reads_as_patient(principal):
        return [to_resource(event) for event in events]
    if patient_id is None:
        return []  # an unbound patient/ token reads nothing (and its query found nothing)
    actors = resolve_actors(auth_session, (e.actor_id for e in events), patient_id=patient_id)
    return [
        to_patient_resource(event, actor_for(actors, event.actor_id, event.actor_role).who)
        for event in events
    ]


def read(
    *,
    session: Session,
    auth_session: Session,
    principal: Principal,
    raw_id: str,
    context: AuditContext,
) -> dict[str, Any]:
    """One event the caller reads; any other id is the same 404 as an unknown one."""
    require_audit_events(principal)
    event_id = _event_id(raw_id)
    event = (
        repository.audit_event(session, readable_audit_events(principal), event_id)
        if event_id is not None
        else None
    )
    if event is None:
        problem = NotFound("No AuditEvent with this id.")
        hidden = repository.audit_event_patient(session, event_id) if event_id else None
        if hidden is not None:
            # Someone else's event: the attempt belongs in that patient's history.
            denied(problem, Denial(principal, "audit_log", None, hidden, "audit:read"))
        raise problem
    audit.record(
        session=session,
        context=context,
        action=READ_ACTION,
        resource_type="audit_log",
        patient_id=own_patient(principal),
        details={"view": "fhir-audit-event", "event_id": event.id},
    )
    return _render(auth_session, principal, [event])[0]


def parse_search(
    params: Sequence[tuple[str, str]], *, strict: bool, base: str
) -> tuple[AuditFilters, fhir_search.ParsedSearch]:
    ids: list[frozenset[int]] = []
    patients: list[frozenset[uuid.UUID]] = []
    agents: list[frozenset[str]] = []
    entities: list[frozenset[tuple[str, str]]] = []
    subtypes: list[frozenset[str]] = []
    outcomes: list[frozenset[str]] = []
    dates: list[tuple[fhir_search.DateBound, ...]] = []

    def on_id(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("_id", modifier)
        parsed = (_event_id(v) for v in fhir_search.split_values(value))
        ids.append(frozenset(p for p in parsed if p is not None))

    def on_patient(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("patient", modifier, allowed=("Patient",))
        found = set()
        for item in fhir_search.split_values(value):
            target = split_reference(item, base) if "/" in item else ("Patient", item)
            patient_id = parse_uuid(target[1]) if target and target[0] == "Patient" else None
            if patient_id is not None:
                found.add(patient_id)
        patients.append(frozenset(found))

    def on_agent(modifier: str | None, value: str) -> None:
        # Agents are the vault's actors ("user:…", "api_token:…"): by their actor id,
        # or as an identifier token (agent:identifier=urn:medvault:actor|user:…).
        fhir_search.no_modifier("agent", modifier, allowed=("identifier",))
        found = set()
        for item in fhir_search.split_values(value):
            if modifier == "identifier":
                token = fhir_search.token(item)
                if token.system in (None, ACTOR_SYSTEM) and token.code:
                    found.add(token.code)
            else:
                found.add(item)
        agents.append(frozenset(found))

    def on_entity(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("entity", modifier)
        found = set()
        for item in fhir_search.split_values(value):
            target = split_reference(item, base)
            if target and target[0] in VAULT_TYPE_BY_FHIR:
                # DocumentReference/{document}.{n} is about the same vault document.
                found.add((VAULT_TYPE_BY_FHIR[target[0]], target[1].split(".")[0]))
        entities.append(frozenset(found))

    def on_subtype(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("subtype", modifier)
        found = set()
        for item in fhir_search.split_values(value):
            token = fhir_search.token(item)
            if token.system in (None, ACTION_SYSTEM) and token.code:
                found.add(token.code)
        subtypes.append(frozenset(found))

    def on_outcome(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("outcome", modifier)
        codes = (fhir_search.token(v).code for v in fhir_search.split_values(value))
        outcomes.append(frozenset(OUTCOME_BY_CODE[c] for c in codes if c in OUTCOME_BY_CODE))

    def on_date(modifier: str | None, value: str) -> None:
        fhir_search.no_modifier("date", modifier)
        dates.append(fhir_search.date_bounds(value, name="date"))

    parsed = fhir_search.parse(
        params,
        handlers={
            "_id": on_id,
            "patient": on_patient,
            "agent": on_agent,
            "entity": on_entity,
            "subtype": on_subtype,
            "outcome": on_outcome,
            "date": on_date,
        },
        sorts=SORTS,
        default_sort=DEFAULT_SORT,
        strict=strict,
    )
    filters = AuditFilters(
        ids=tuple(ids),
        patients=tuple(patients),
        agents=tuple(agents),
        entities=tuple(entities),
        subtypes=tuple(subtypes),
        outcomes=tuple(outcomes),
        dates=tuple(dates),
    )
    return filters, parsed


def search(
    *,
    session: Session,
    auth_session: Session,
    principal: Principal,
    params: Sequence[tuple[str, str]],
    strict: bool,
    context: AuditContext,
    base: str,
) -> dict[str, Any]:
    """A searchset of the events the caller reads (see the module docstring)."""
    require_audit_events(principal)
    filters, parsed = parse_search(params, strict=strict, base=base)
    readable = readable_audit_events(principal)
    total = repository.count_audit_events(session, readable, filters) if parsed.total else None
    rows = (
        repository.page_audit_events(session, readable, filters, repository.page_window(parsed))
        if parsed.count
        else []
    )
    page = fhir_search.page_of(rows, parsed, lambda event: fhir_search.Position(None, event.id))
    # The record this read is about: the one searched for, else a patient's own.
    patient = own_patient(principal)
    if len(filters.patients) == 1 and len(filters.patients[0]) == 1:
        patient = next(iter(filters.patients[0]))
    audit.record(
        session=session,
        context=context,
        action=READ_ACTION,
        resource_type="audit_log",
        patient_id=patient,
        details={"view": "fhir-audit-events", "returned": len(page.rows)},
    )
    resources = _render(auth_session, principal, page.rows)
    return searchset(
        entries=[
            (f"{base}/AuditEvent/{event.id}", resource)
            for event, resource in zip(page.rows, resources, strict=True)
        ],
        total=total,
        links=fhir_search.links(f"{base}/AuditEvent", parsed, page, default_sort=DEFAULT_SORT),
        ignored=parsed.ignored,
    )
