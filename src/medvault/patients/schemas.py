"""Patient API shapes."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from medvault.kit.i18n import N_
from medvault.kit.text import NONBLANK_TEXT_PATTERN, CleanTextModel
from medvault.kit.timestamps import IsoDate

# The pattern documents what stripping then requiring one character means on the wire.
NonEmpty = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, pattern=NONBLANK_TEXT_PATTERN)
]


class Identifier(BaseModel):
    # Like the patient around it: an unknown member is a mistake, not something to drop.
    model_config = ConfigDict(extra="forbid")

    system: Annotated[NonEmpty, StringConstraints(max_length=255)] = Field(
        examples=["https://fhir.nhs.uk/Id/nhs-number"]
    )
    value: Annotated[NonEmpty, StringConstraints(max_length=128)] = Field(examples=["9434765919"])

    @field_validator("system")
    @classmethod
    def _system_is_uri(cls, value: str) -> str:
        if ":" not in value or any(ch.isspace() for ch in value):
            raise ValueError(N_("identifier system must be an absolute URI"))
        return value

    @field_validator("value")
    @classmethod
    def _value_has_no_separator(cls, value: str) -> str:
        if "|" in value:
            raise ValueError(N_("identifier value may not contain '|'"))
        return value


class PatientCreate(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    identifier: Identifier
    family_name: Annotated[NonEmpty, StringConstraints(max_length=200)]
    given_name: Annotated[NonEmpty, StringConstraints(max_length=200)]
    birth_date: IsoDate

    @field_validator("birth_date")
    @classmethod
    def _plausible_birth_date(cls, value: date) -> date:
        if value > date.today():
            raise ValueError(N_("birth date is in the future"))
        if value.year < 1850:
            raise ValueError(N_("birth date is implausibly early"))
        return value


class PatientUpdate(CleanTextModel):
    """The dates retention schedules use; a member left out is unchanged, null clears it."""

    model_config = ConfigDict(extra="forbid")

    deceased_on: IsoDate | None = Field(default=None, description="Date of death")
    treatment_ended_on: IsoDate | None = Field(
        default=None, description="End of treatment (else the record's last entry counts)"
    )

    @field_validator("deceased_on", "treatment_ended_on")
    @classmethod
    def _not_in_future(cls, value: date | None) -> date | None:
        if value is not None and value > date.today():
            raise ValueError(N_("the date is in the future"))
        return value


class PatientOut(BaseModel):
    id: uuid.UUID
    identifier: Identifier
    family_name: str
    given_name: str
    birth_date: date
    created_at: datetime
    deceased_on: date | None = None
    treatment_ended_on: date | None = None


class PatientPage(BaseModel):
    items: list[PatientOut]
    next_cursor: str | None
