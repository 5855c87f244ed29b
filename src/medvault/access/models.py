"""Care teams: which clinicians look after which patients."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import ClinicalBase
from medvault.db.types import UTCDateTime


class CareTeamMember(ClinicalBase):
    """A clinician (a user in the auth database) assigned to a patient.

    It lives in the clinical database so the readable-documents query can join it;
    the clinician id is a plain UUID because the two databases are never joined.
    """

    __tablename__ = "care_team_members"
    __table_args__ = (Index("ix_care_team_members_clinician", "clinician_id", "patient_id"),)

    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("patient_refs.id", ondelete="CASCADE"), primary_key=True
    )
    clinician_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    added_by: Mapped[str] = mapped_column(String(200))
