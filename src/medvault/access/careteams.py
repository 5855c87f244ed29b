"""Care teams: assigning clinicians to patients, which is what opens a patient's records
to a clinician in the access policy. Every change is audited with the patient.

Clinicians live in the auth database and memberships in the clinical one. The auth
session given here is only read from, so it can be a read-only session.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault.access.models import CareTeamMember
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth import repository as auth_repository
from medvault.auth.principal import Role
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.problems import Conflict, NotFound, Problem, UnknownPatient
from medvault.patients import repository as patients


class UnknownClinician(Problem):
    status, slug, title = 422, "unknown-clinician", N_("No enabled clinician with this id")


@dataclass(frozen=True)
class CareTeamEntry:
    clinician_id: uuid.UUID
    clinician_username: str | None
    patient_id: uuid.UUID
    added_at: datetime
    added_by: str


def _entry(member: CareTeamMember, username: str | None) -> CareTeamEntry:
    return CareTeamEntry(
        clinician_id=member.clinician_id,
        clinician_username=username,
        patient_id=member.patient_id,
        added_at=member.added_at,
        added_by=member.added_by,
    )


def add(
    *,
    clinical_session: Session,
    auth_session: Session,
    clinician_id: uuid.UUID,
    patient_id: uuid.UUID,
    context: AuditContext,
) -> tuple[CareTeamEntry, bool]:
    """Put a clinician on a patient's care team; (entry, False) if already on it."""
    clinician = auth_repository.user_by_id(auth_session, clinician_id)
    if clinician is None or clinician.role != Role.CLINICIAN.value:
        raise UnknownClinician(N_("No clinician user with this id."))
    if clinician.disabled_at is not None:
        raise UnknownClinician(N_("This clinician's account is disabled."))
    if patients.get(clinical_session, patient_id) is None:
        raise UnknownPatient(N_("No patient with this id."))
    existing = clinical_session.get(CareTeamMember, (patient_id, clinician_id))
    if existing is not None:
        return _entry(existing, clinician.username), False
    member = CareTeamMember(
        patient_id=patient_id,
        clinician_id=clinician_id,
        added_at=utcnow(),
        added_by=context.actor_id,
    )
    clinical_session.add(member)
    try:
        clinical_session.flush()
    except IntegrityError:
        # A concurrent add of the same membership won; its event records it.
        clinical_session.rollback()
        raise Conflict(N_("This clinician was just added to this care team.")) from None
    audit.record(
        session=clinical_session,
        context=context,
        action="careteam.add",
        resource_type="CareTeamMember",
        resource_id=clinician_id,
        patient_id=patient_id,
        details={"clinician_id": str(clinician_id), "clinician": clinician.username},
    )
    return _entry(member, clinician.username), True


def remove(
    *,
    clinical_session: Session,
    clinician_id: uuid.UUID,
    patient_id: uuid.UUID,
    context: AuditContext,
) -> None:
    """Take a clinician off a patient's care team; their access ends with this commit."""
    member = clinical_session.get(CareTeamMember, (patient_id, clinician_id))
    if member is None:
        raise NotFound(N_("This clinician is not on this patient's care team."))
    clinical_session.delete(member)
    clinical_session.flush()
    audit.record(
        session=clinical_session,
        context=context,
        action="careteam.remove",
        resource_type="CareTeamMember",
        resource_id=clinician_id,
        patient_id=patient_id,
        details={"clinician_id": str(clinician_id)},
    )


def list_members(
    *,
    clinical_session: Session,
    auth_session: Session,
    patient_id: uuid.UUID | None = None,
    clinician_id: uuid.UUID | None = None,
) -> list[CareTeamEntry]:
    """Memberships, by patient then time added, optionally for one patient or clinician."""
    query = select(CareTeamMember).order_by(
        CareTeamMember.patient_id, CareTeamMember.added_at, CareTeamMember.clinician_id
    )
    if patient_id is not None:
        query = query.where(CareTeamMember.patient_id == patient_id)
    if clinician_id is not None:
        query = query.where(CareTeamMember.clinician_id == clinician_id)
    members = list(clinical_session.scalars(query))
    users = auth_repository.users_by_ids(auth_session, (m.clinician_id for m in members))
    return [
        _entry(m, users[m.clinician_id].username if m.clinician_id in users else None)
        for m in members
    ]
