"""Care-team API shapes."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from medvault.kit.text import CleanTextModel


class CareTeamMemberIn(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    clinician_id: uuid.UUID
    patient_id: uuid.UUID


class CareTeamMemberOut(BaseModel):
    clinician_id: uuid.UUID
    clinician_username: str | None = Field(description="None if the user no longer exists")
    patient_id: uuid.UUID
    added_at: datetime
    added_by: str


class CareTeamList(BaseModel):
    items: list[CareTeamMemberOut]
