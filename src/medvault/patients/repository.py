"""Every patient query."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from medvault.access.policy import readable_patients
from medvault.auth.principal import Principal
from medvault.kit.keyset import Cursor, older_than
from medvault.patients.models import Patient


def get(session: Session, patient_id: uuid.UUID) -> Patient | None:
    return session.get(Patient, patient_id)


def lock(session: Session, patient_id: uuid.UUID) -> Patient | None:
    """The patient, row-locked until commit: serialises the duplicate check per patient."""
    return session.scalar(select(Patient).where(Patient.id == patient_id).with_for_update())


def by_identifier(session: Session, system: str, value: str) -> Patient | None:
    return session.scalar(
        select(Patient).where(
            Patient.identifier_system == system, Patient.identifier_value == value
        )
    )


def readable(session: Session, principal: Principal, patient_id: uuid.UUID) -> Patient | None:
    return session.scalar(readable_patients(principal).where(Patient.id == patient_id))


def page(
    session: Session,
    principal: Principal,
    *,
    limit: int,
    cursor: Cursor | None,
    identifier: tuple[str, str] | None,
) -> list[Patient]:
    query = readable_patients(principal)
    if identifier is not None:
        query = query.where(
            Patient.identifier_system == identifier[0], Patient.identifier_value == identifier[1]
        )
    if cursor is not None:
        query = query.where(older_than(cursor, Patient.created_at, Patient.id))
    query = query.order_by(Patient.created_at.desc(), Patient.id.desc()).limit(limit)
    return list(session.scalars(query))
