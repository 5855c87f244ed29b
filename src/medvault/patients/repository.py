"""Every patient query.

``Patient`` rows live in the patient database; ``PatientRef`` rows, the bare ids the
clinical tables reference, in the clinical one. Lookups for a caller take the
``PatientScope`` resolved in the clinical database (``access.policy``), so a query
of the patient database reaches no further than the caller's care teams.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from medvault.access.policy import PatientScope, readable_patients
from medvault.kit.i18n import msg
from medvault.kit.keyset import Cursor, older_than
from medvault.kit.text import bounded_words
from medvault.patients.models import Patient, PatientRef


def get(session: Session, patient_id: uuid.UUID) -> Patient | None:
    return session.get(Patient, patient_id)


def lock(session: Session, patient_id: uuid.UUID) -> PatientRef | None:
    """The patient's clinical reference, row-locked until commit: serialises the
    duplicate check per patient inside the clinical transaction that inserts.

    None unless the patient is registered in the patient database too (read first; a
    registration interrupted between its two commits leaves a bare reference). No
    race: patients are never deleted, so a patient seen here stays.
    """
    if session.get(Patient, patient_id) is None:
        return None
    return session.scalar(select(PatientRef).where(PatientRef.id == patient_id).with_for_update())


def by_identifier(session: Session, system: str, value: str) -> Patient | None:
    return session.scalar(
        select(Patient).where(
            Patient.identifier_system == system, Patient.identifier_value == value
        )
    )


def readable(session: Session, scope: PatientScope, patient_id: uuid.UUID) -> Patient | None:
    if not scope.reaches(patient_id):
        return None
    return session.get(Patient, patient_id)


def readable_many(
    session: Session, scope: PatientScope, patient_ids: set[uuid.UUID]
) -> list[Patient]:
    wanted = sorted(i for i in patient_ids if scope.reaches(i))
    if not wanted:
        return []
    return list(session.scalars(readable_patients(scope).where(Patient.id.in_(wanted))))


def page(
    session: Session,
    scope: PatientScope,
    *,
    limit: int,
    cursor: Cursor | None,
    identifier: tuple[str, str] | None,
    name: str | None = None,
    identifier_value: str | None = None,
    birth_date: date | None = None,
) -> list[Patient]:
    query = readable_patients(scope)
    if identifier is not None:
        query = query.where(
            Patient.identifier_system == identifier[0], Patient.identifier_value == identifier[1]
        )
    if name:
        query = with_name(query, name)
    if identifier_value:
        query = query.where(Patient.identifier_value == identifier_value)
    if birth_date is not None:
        query = query.where(Patient.birth_date == birth_date)
    if cursor is not None:
        query = query.where(older_than(cursor, Patient.created_at, Patient.id))
    query = query.order_by(Patient.created_at.desc(), Patient.id.desc()).limit(limit)
    return list(session.scalars(query))


def with_name(query: Select[Patient], name: str) -> Select[Patient]:
    """Each word must start a given or family name: "ann smi" finds Ann Smith."""
    for word in bounded_words(name.lower(), what=msg("name")):
        pattern = _escape_like(word) + "%"
        query = query.where(
            or_(
                func.lower(Patient.family_name).like(pattern, escape="\\"),
                func.lower(Patient.given_name).like(pattern, escape="\\"),
            )
        )
    return query


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
