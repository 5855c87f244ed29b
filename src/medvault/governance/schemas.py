"""Records governance API shapes."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from medvault.governance.models import AppraisalState, HoldScope
from medvault.kit.i18n import N_
from medvault.kit.text import NONBLANK_TEXT_PATTERN, CleanTextModel
from medvault.kit.timestamps import IsoDate

Reason = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=1000, pattern=NONBLANK_TEXT_PATTERN
    ),
]
Reference = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=NONBLANK_TEXT_PATTERN
    ),
]
DocumentType = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,10}-[0-9]$")]


class RuleOut(BaseModel):
    when: str = Field(description="`always`, `deceased`, `alive`, `minor_at_end`, `aged_17_at_end`")
    after: dict[str, int] = Field(
        description="Anchor → years; the rule's date is the earliest of its known terms"
    )


class RetentionClassOut(BaseModel):
    name: str
    label: str
    citation: str
    rules: list[RuleOut] = Field(description="The first rule that applies decides")
    document_types: list[str] = Field(description="LOINC codes mapped to this class")
    default: bool = Field(description="Unmapped document types fall in this class")


class RetentionClassList(BaseModel):
    items: list[RetentionClassOut]


class HoldCreate(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    scope: HoldScope
    patient_id: uuid.UUID | None = Field(default=None, description="For scope `patient`")
    document_id: uuid.UUID | None = Field(default=None, description="For scope `document`")
    document_type: DocumentType | None = Field(
        default=None, description="For scope `query`: a LOINC document type"
    )
    created_from: IsoDate | None = Field(
        default=None, description="For scope `query`: documents created on or after"
    )
    created_to: IsoDate | None = Field(
        default=None, description="For scope `query`: documents created on or before"
    )
    reason: Reason
    reference: Reference = Field(description="The inquiry's own reference, e.g. a case number")

    @model_validator(mode="after")
    def _fits_scope(self) -> Self:
        by_query = any(
            value is not None for value in (self.document_type, self.created_from, self.created_to)
        )
        given = {
            HoldScope.PATIENT: self.patient_id is not None,
            HoldScope.DOCUMENT: self.document_id is not None,
            HoldScope.QUERY: by_query,
        }
        if not given[self.scope] or sum(given.values()) != 1:
            raise ValueError(
                N_(
                    "give the fields of the hold's scope only: patient_id, document_id, "
                    "or document_type and/or a created date range"
                )
            )
        if self.created_from and self.created_to and self.created_from > self.created_to:
            raise ValueError(N_("created_from is after created_to"))
        return self


class HoldRelease(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class HoldOut(BaseModel):
    id: uuid.UUID
    scope: HoldScope
    patient_id: uuid.UUID | None
    document_id: uuid.UUID | None
    document_type: str | None
    created_from: date | None
    created_to: date | None
    reason: str
    reference: str
    placed_by: str
    placed_at: datetime
    active: bool
    released_at: datetime | None
    released_by: str | None
    release_reason: str | None


class HoldList(BaseModel):
    items: list[HoldOut]


class ApprovalOut(BaseModel):
    actor: str
    role: str
    at: datetime
    reason: str


class AppraisalOut(BaseModel):
    id: uuid.UUID
    document_id: uuid.UUID
    patient_id: uuid.UUID
    document_type: str
    retention_class: str
    retain_until: date
    state: AppraisalState
    listed_at: datetime
    approvals: list[ApprovalOut]
    approvals_needed: int
    decided_at: datetime | None
    keep_until: date | None
    note: str | None


class AppraisalList(BaseModel):
    items: list[AppraisalOut]


class Approve(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class Keep(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    keep_until: IsoDate = Field(description="Appraised again after this date")
