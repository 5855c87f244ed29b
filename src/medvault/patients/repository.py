"""Every patient query."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from medvault.access.policy import readable_patients
from medvault.auth.principal import Principal
from medvault.kit.i18n import msg
from medvault.kit.keyset import Cursor, older_than
from medvault.kit.text import bounded_words
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


def readable_many(
    session: Session, principal: Principal, patient_ids: set[uuid.UUID]
) -> list[Patient]:
    if not patient_ids:
        return []
    return list(session.scalars(readable_patients(principal).where(Patient.id.in_(patient_ids))))


def page(
    session: Session,
    principal: Principal,
    *,
    limit: int,
    cursor: Cursor | None,
    identifier: tuple[str, str] | None,
    name: str | None = None,
    identifier_value: str | None = None,
    birth_date: date | None = None,
) -> list[Patient]:
    query = readable_patients(principal)
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
