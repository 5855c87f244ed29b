"""The "Create Document" form as a validated model: what a clinician may put in a note.

Every field is bounded (text lengths, line counts, at most ``MAX_ROWS`` rows per list),
so the largest valid draft renders to a bounded PDF in bounded time; see ``pdf``.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError, PydanticKnownError

from medvault.documents.compose.document_types import is_offered, label_for
from medvault.documents.compose.text import (
    SHORT_MAX,
    Name,
    OptionalDiagnosis,
    OptionalNotes,
    OptionalUnit,
    ShortText,
    Title,
    clean_line,
)
from medvault.kit.clock import utcnow

MAX_ROWS = 50
EARLIEST_OBSERVATION = dt.date(1900, 1, 1)

# A plain decimal as people type it. Exponents ("1e3") stay text, so what is printed is
# always what was typed.
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
NUMBER_MAX_DIGITS = 15
NUMBER_MAX_PLACES = 6


class AllergySeverity(StrEnum):
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllergyEntry(_Row):
    substance: Name
    reaction: Name
    severity: AllergySeverity


class MedicationEntry(_Row):
    name: Name
    dose: ShortText
    route: ShortText
    frequency: ShortText


class ObservationEntry(_Row):
    name: Name
    value: Decimal | str = Field(description="A plain decimal number, or short text")
    unit: OptionalUnit = None
    # ``dt.date``: a bare ``date`` annotation would resolve to this field's own default.
    date: dt.date | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _number_or_text(cls, raw: Any) -> Decimal | str:
        # Decided here, before the union, so a value has exactly one reading and its
        # errors are reported against the field rather than against each union member.
        if isinstance(raw, bool):
            raise PydanticCustomError("value_type", "must be a number or text")
        if isinstance(raw, Decimal | int | float):
            raw = str(raw)
        if not isinstance(raw, str):
            raise PydanticCustomError("value_type", "must be a number or text")
        text = clean_line(raw)
        if not text:
            raise PydanticKnownError("missing")
        if len(text) > SHORT_MAX:
            raise PydanticKnownError("string_too_long", {"max_length": SHORT_MAX})
        if not _NUMBER.fullmatch(text):
            return text
        number = Decimal(text)
        _sign, digits, exponent = number.as_tuple()
        places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        if len(digits) > NUMBER_MAX_DIGITS or places > NUMBER_MAX_PLACES:
            raise PydanticCustomError(
                "number_too_precise",
                "has too many digits",
                {"max_digits": NUMBER_MAX_DIGITS, "max_places": NUMBER_MAX_PLACES},
            )
        return number

    @field_validator("date")
    @classmethod
    def _plausible_date(cls, value: dt.date | None) -> dt.date | None:
        if value is None:
            return None
        # One day of slack: "today" for a clinician east of UTC is already tomorrow here.
        if value > utcnow().date() + dt.timedelta(days=1):
            raise PydanticCustomError("date_in_future", "can't be in the future")
        if value < EARLIEST_OBSERVATION:
            raise PydanticCustomError(
                "date_too_early", "is too early", {"earliest": EARLIEST_OBSERVATION.isoformat()}
            )
        return value

    @property
    def is_numeric(self) -> bool:
        return isinstance(self.value, Decimal)


class ClinicalDocumentDraft(BaseModel):
    """What the clinician filled in. Rendering adds patient, author and time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patient_id: uuid.UUID
    document_type: str = Field(description="A LOINC code from DOCUMENT_TYPES")
    title: Title
    diagnosis: OptionalDiagnosis = None
    no_known_allergies: bool = False
    allergies: tuple[AllergyEntry, ...] = Field(default=(), max_length=MAX_ROWS)
    medications: tuple[MedicationEntry, ...] = Field(default=(), max_length=MAX_ROWS)
    observations: tuple[ObservationEntry, ...] = Field(default=(), max_length=MAX_ROWS)
    notes: OptionalNotes = None

    @field_validator("document_type")
    @classmethod
    def _offered_type(cls, value: str) -> str:
        if not is_offered(value.strip()):
            raise PydanticCustomError("unknown_document_type", "is not one the form offers")
        return value.strip()

    @model_validator(mode="after")
    def _coherent(self) -> ClinicalDocumentDraft:
        if self.no_known_allergies and self.allergies:
            raise PydanticCustomError(
                "allergies_conflict", "lists allergies and also says there are none"
            )
        if not self.has_content:
            raise PydanticCustomError("no_content", "has no clinical content")
        return self

    @property
    def has_content(self) -> bool:
        return bool(
            self.diagnosis
            or self.no_known_allergies
            or self.allergies
            or self.medications
            or self.observations
            or self.notes
        )

    @property
    def document_type_label(self) -> str:
        return label_for(self.document_type)
