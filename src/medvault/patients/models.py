"""The patient registry: who a document belongs to, split over two of the databases.

``Patient`` (the patient database) is the only row that joins an id to a person.
``PatientRef`` (the clinical database) holds the bare, pseudonymous id: the row the
clinical tables reference, so referential integrity stays inside the clinical
database, and the row an upload locks to serialise its duplicate check per patient.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Date, Index, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import ClinicalBase, PatientBase
from medvault.db.types import UTCDateTime


class Patient(PatientBase):
    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("identifier_system", "identifier_value", name="uq_patients_identifier"),
        Index("ix_patients_created", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    identifier_system: Mapped[str] = mapped_column(String(255))
    identifier_value: Mapped[str] = mapped_column(String(128))
    family_name: Mapped[str] = mapped_column(String(200))
    given_name: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[date] = mapped_column(Date)
    # Inputs to retention schedules (``governance.schedule``): unknown until given.
    deceased_on: Mapped[date | None] = mapped_column(Date)
    treatment_ended_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PatientRef(ClinicalBase):
    """A patient as the clinical database knows them: an id, and nothing about them."""

    __tablename__ = "patient_refs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
