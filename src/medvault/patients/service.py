"""Patient registry use cases."""

from __future__ import annotations

import re
import uuid
from datetime import date

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault.access.denials import Denial, denied, failed_attempt
from medvault.access.models import CareTeamMember
from medvault.access.policy import reaches_every_patient, resolve_patient_scope
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal, Role
from medvault.governance import retention
from medvault.governance.schedule import Schedule
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.keyset import Cursor
from medvault.kit.problems import (
    BadRequest,
    DuplicatePatient,
    Forbidden,
    NotFound,
    Problem,
    ValidationFailed,
)
from medvault.patients import repository
from medvault.patients.models import Patient, PatientRef
from medvault.patients.schemas import (
    Identifier,
    PatientCreate,
    PatientOut,
    PatientPage,
    PatientUpdate,
)


class DateBeforeBirth(ValidationFailed):
    status, slug, title = 422, "date-before-birth", N_("The date is before the patient's birth")


def to_out(patient: Patient) -> PatientOut:
    return PatientOut(
        id=patient.id,
        identifier=Identifier(system=patient.identifier_system, value=patient.identifier_value),
        family_name=patient.family_name,
        given_name=patient.given_name,
        birth_date=patient.birth_date,
        created_at=patient.created_at,
        deceased_on=patient.deceased_on,
        treatment_ended_on=patient.treatment_ended_on,
    )


def commit_with_audit(*, patient_session: Session, clinical_session: Session) -> None:
    """Commit a change to demographics after the clinical transaction holding its event.

    As for the auth database (``auth.service.commit_with_audit``): the databases share
    no transaction, and the audit event goes first, so a crash in between leaves an
    event (and a bare clinical reference) for a patient that was not stored, never a
    change nobody recorded. If the audit commit fails, nothing is committed (503).
    """
    audit.commit_or_refuse(clinical_session)
    patient_session.commit()


def create(
    *,
    session: Session,
    patient_session: Session,
    data: PatientCreate,
    context: AuditContext,
    registered_by: Principal | None = None,
) -> Patient:
    """Register a patient; a second patient with the same identifier is a conflict.

    The demographics go to the patient database (``patient_session``), the bare id to
    the clinical one with the audit event; commit with ``commit_with_audit``. A
    clinician who registers a patient joins that patient's care team in the same
    clinical transaction, so they can file the first letter at once and nobody else
    gains access. The patient database is written first: its write lock, then the
    clinical one, always in that order.
    """
    existing = repository.by_identifier(
        patient_session, data.identifier.system, data.identifier.value
    )
    if existing is not None:
        if registered_by is not None and not reaches_every_patient(registered_by):
            # The conflict itself is unavoidable; the other record's id is not theirs to see.
            raise DuplicatePatient()
        raise DuplicatePatient(existing_patient_id=str(existing.id))
    patient = Patient(
        identifier_system=data.identifier.system,
        identifier_value=data.identifier.value,
        family_name=data.family_name,
        given_name=data.given_name,
        birth_date=data.birth_date,
        created_at=utcnow(),
    )
    patient_session.add(patient)
    try:
        patient_session.flush()
    except IntegrityError:
        # Lost a race with a concurrent create of the same identifier.
        raise DuplicatePatient() from None
    session.add(PatientRef(id=patient.id))
    session.flush()
    audit.record(
        session=session,
        context=context,
        action="patient.create",
        resource_type="Patient",
        resource_id=patient.id,
        patient_id=patient.id,
    )
    if registered_by is not None and registered_by.role is Role.CLINICIAN:
        session.add(
            CareTeamMember(
                patient_id=patient.id,
                clinician_id=registered_by.subject_id,
                added_at=patient.created_at,
                added_by=context.actor_id,
            )
        )
        session.flush()
        audit.record(
            session=session,
            context=context,
            action="careteam.add",
            resource_type="CareTeamMember",
            resource_id=registered_by.subject_id,
            patient_id=patient.id,
            details={
                "clinician_id": str(registered_by.subject_id),
                "reason": "registered the patient",
            },
        )
    return patient


def _readable_or_404(session: Session, principal: Principal, patient_id: uuid.UUID) -> Patient:
    scope = resolve_patient_scope(session, principal)
    patient = repository.readable(session, scope, patient_id)
    if patient is None:
        problem = NotFound(N_("No patient with this id."))
        # Audited whether or not the patient exists: the same work either way, so the
        # answer's timing does not tell "not yours" from "absent" (the 404 does not).
        exists = repository.get(session, patient_id) is not None
        raise denied(
            problem, Denial(principal, "Patient", patient_id, patient_id if exists else None)
        )
    return patient


def get(
    *, session: Session, principal: Principal, patient_id: uuid.UUID, context: AuditContext
) -> Patient:
    """One patient, if the caller's scope reaches it; otherwise the same 404 as absent."""
    patient = _readable_or_404(session, principal, patient_id)
    audit.record(
        session=session,
        context=context,
        action="patient.read",
        resource_type="Patient",
        resource_id=patient.id,
        patient_id=patient.id,
    )
    return patient


def update(
    *,
    session: Session,
    patient_session: Session,
    principal: Principal,
    patient_id: uuid.UUID,
    data: PatientUpdate,
    context: AuditContext,
    schedule: Schedule,
) -> Patient:
    """Set or clear the dates retention uses; the record's retention dates follow at once.

    Staff only: these dates decide when a record may be destroyed, so a patient's own
    app (a ``patient/`` token, which SMART lets write Patient) may not move them.
    The change is made in ``patient_session``; commit with ``commit_with_audit``.
    """
    # The patient database first, as in ``create``: on SQLite each session takes its
    # database's write lock at its first statement, and two use cases taking the two
    # locks in opposite orders could each wait for the other.
    patient = repository.get(patient_session, patient_id)
    _readable_or_404(session, principal, patient_id)
    if patient is None:  # readable, so registered: patients are never deleted
        raise NotFound(N_("No patient with this id."))
    if principal.patient_id is not None:
        problem: Problem = Forbidden(
            N_("Only staff record a date of death or an end of treatment.")
        )
        raise denied(problem, Denial(principal, "Patient", patient.id, patient.id))
    changes = data.model_dump(include=data.model_fields_set)
    if any(day is not None and day < patient.birth_date for day in changes.values()):
        problem = DateBeforeBirth(N_("A date before the patient's birth date."))
        attempt = failed_attempt(
            principal,
            "patient.update",
            resource_type="Patient",
            resource_id=patient.id,
            patient_id=patient.id,
        )
        raise denied(problem, attempt)
    for name, value in changes.items():
        setattr(patient, name, value)
    patient_session.flush()
    changed = retention.refresh_patient(session, schedule, patient.id, patient)
    audit.record(
        session=session,
        context=context,
        action="patient.update",
        resource_type="Patient",
        resource_id=patient.id,
        patient_id=patient.id,
        details={"fields": sorted(changes), "documents_rescheduled": changed},
    )
    return patient


def display_name(family_name: str, given_name: str, identifier: str | None = None) -> str:
    """How pages name a patient: "OWNFAMILY, Alicia", and "(9002890233)" where it helps."""
    name = f"{family_name.upper()}, {given_name}"
    return f"{name} ({identifier})" if identifier else name


# What people type for an identifier: digits with optional spaces or dashes, perhaps
# after a short prefix (NHS 943 476 5919, MRN-0042...). Anything else is a name.
_IDENTIFIER_LIKE = re.compile(r"^[A-Za-z]{0,4}[-\s]?[\d][\d\s-]*$")


def looks_like_identifier(text: str) -> bool:
    return bool(_IDENTIFIER_LIKE.match(text))


def bare_identifier(text: str) -> str:
    """An identifier as stored: without the spaces and dashes people type in it."""
    return re.sub(r"[\s-]", "", text)


def parse_identifier_query(raw: str) -> tuple[str, str]:
    system, sep, value = raw.rpartition("|")
    if not sep or not system or not value:
        raise BadRequest(N_("identifier must look like system|value."))
    return system, value


def search(
    *,
    session: Session,
    principal: Principal,
    identifier: str | None,
    limit: int,
    cursor: str | None,
    context: AuditContext,
    name: str | None = None,
    identifier_value: str | None = None,
    birth_date: date | None = None,
) -> PatientPage:
    """Patients in the caller's scope, newest first, narrowed by any of the filters.

    The search terms are not audited, only that a search happened: they are names.
    """
    parsed = parse_identifier_query(identifier) if identifier is not None else None
    rows = repository.page(
        session,
        resolve_patient_scope(session, principal),
        limit=limit + 1,
        cursor=Cursor.decode(cursor) if cursor else None,
        identifier=parsed,
        name=name,
        identifier_value=identifier_value,
        birth_date=birth_date,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    audit.record(
        session=session,
        context=context,
        action="patient.search",
        resource_type="Patient",
        details={"results": len(rows)},
    )
    next_cursor = Cursor(rows[-1].created_at, rows[-1].id).encode() if more else None
    return PatientPage(items=[to_out(p) for p in rows], next_cursor=next_cursor)
