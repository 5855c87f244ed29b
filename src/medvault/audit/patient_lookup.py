"""Patients as an auditor needs them: found by name or identifier, and named in the log.

An auditor reads the whole log but no record; to investigate "who opened Alicia
Ownfamily's record" they must still say whom they mean, and read names rather than
ids in the results. So a whole-log reader (only) may resolve a name or an identifier
to patients, and see the names and identifiers of the patients the events they read
are about: demographics only, never a document. Every lookup is itself audited,
without its words (they are names), as ``patient.search`` is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from medvault.access.audit_reach import require_whole_log
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.patients import repository
from medvault.patients.models import Patient
from medvault.patients.service import bare_identifier, display_name, looks_like_identifier

MAX_MATCHES = 20


@dataclass(frozen=True)
class PatientRef:
    id: uuid.UUID
    label: str  # "OWNFAMILY, Alicia (9002890233)"


def _ref(patient: Patient) -> PatientRef:
    return PatientRef(
        id=patient.id,
        label=display_name(patient.family_name, patient.given_name, patient.identifier_value),
    )


def find(
    *, session: Session, principal: Principal, context: AuditContext, text: str
) -> list[PatientRef]:
    """Patients whose identifier is ``text``, or whose names start with its words."""
    require_whole_log(principal)
    query = select(Patient)
    if looks_like_identifier(text):
        query = query.where(Patient.identifier_value == bare_identifier(text))
    else:
        query = repository.with_name(query, text)
    rows = session.scalars(
        query.order_by(Patient.family_name, Patient.given_name, Patient.id).limit(MAX_MATCHES + 1)
    ).all()
    audit.record(
        session=session,
        context=context,
        action="audit.patient.lookup",
        resource_type="Patient",
        details={"results": min(len(rows), MAX_MATCHES)},
    )
    return [_ref(patient) for patient in rows[:MAX_MATCHES]]


def names(
    *, session: Session, principal: Principal, patient_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Labels of the patients that events already shown to this auditor are about."""
    require_whole_log(principal)
    wanted = set(patient_ids)
    if not wanted:
        return {}
    rows = session.scalars(select(Patient).where(Patient.id.in_(wanted)))
    return {patient.id: _ref(patient).label for patient in rows}
