"""The "My Documents" table's query: filters, sort and page, as the filter form posts them.

Filters travel in POST bodies, never in the URL: a search for words in a title is
clinical information, and URLs end up in browser history, proxies and server logs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from medvault.documents.models import DocumentStatus
from medvault.documents.ordering import DocumentSort
from medvault.documents.repository import ListFilters
from medvault.documents.schemas import LoincCode
from medvault.kit.i18n import N_

PAGE_SIZE = 25
MAX_TRAIL = 200


class DocumentQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    document_type: LoincCode | Literal[""] = ""
    uploaded_from: date | None = None
    uploaded_to: date | None = None
    sort: DocumentSort = DocumentSort.NEWEST
    status: Literal["current", "deleted"] = "current"
    patient_id: uuid.UUID | None = None
    cursor: Annotated[str, StringConstraints(max_length=512)] = ""
    # Cursors of the pages before this one, so "Previous page" needs no OFFSET.
    trail: list[str] = Field(default_factory=list, max_length=MAX_TRAIL)

    @model_validator(mode="after")
    def _dates_in_order(self) -> DocumentQuery:
        if self.uploaded_from and self.uploaded_to and self.uploaded_from > self.uploaded_to:
            raise ValueError(N_("The 'from' date is after the 'to' date."))
        return self

    @classmethod
    def from_form(cls, form: dict[str, str]) -> DocumentQuery:
        values: dict[str, object] = {k: v for k, v in form.items() if v != "" or k == "q"}
        trail = form.get("trail", "")
        values["trail"] = [part for part in trail.split(" ") if part] if trail else []
        return cls.model_validate(values)

    @classmethod
    def from_state(cls, state: dict[str, object]) -> DocumentQuery | None:
        """A query a session view kept; None if it no longer parses (an older release)."""
        try:
            return cls.model_validate(state)
        except ValidationError:
            return None

    def filters(self, zone: tzinfo) -> ListFilters:
        """The query for the service; typed dates are days in the viewer's ``zone``."""

        def start_of(day: date) -> datetime:
            return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)

        return ListFilters(
            patient_id=self.patient_id,
            document_type=self.document_type or None,
            created_after=start_of(self.uploaded_from) if self.uploaded_from else None,
            # "To 3 March" includes all of 3 March.
            created_before=(
                start_of(self.uploaded_to + timedelta(days=1)) if self.uploaded_to else None
            ),
            status=DocumentStatus(self.status),
        )

    @property
    def filtered(self) -> bool:
        return bool(
            self.q
            or self.document_type
            or self.uploaded_from
            or self.uploaded_to
            or self.status != "current"
        )
