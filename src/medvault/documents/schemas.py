"""Document API shapes. Nothing here ever carries a storage key or server path."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from medvault.documents.models import Classification, DocumentStatus, VersionState
from medvault.kit.text import CleanTextModel

# The columns are 32-bit on PostgreSQL: a larger number is a 422, not a driver overflow.
MAX_DB_INT = 2**31 - 1
# A client's file name is kept (for display) up to this many characters; longer is a 422.
MAX_FILENAME_CHARS = 1024
# An explicit title longer than the column is a 422; one derived from a file name is cut.
MAX_TITLE_CHARS = 500

LoincCode = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^\d{1,7}-\d$", max_length=16)
]


class OnDuplicate(StrEnum):
    REJECT = "reject"
    ALLOW = "allow"
    NEW_VERSION = "new_version"


class DocumentFields(CleanTextModel):
    """Metadata sent with an upload, as form fields or query parameters."""

    model_config = ConfigDict(extra="ignore")

    patient_id: uuid.UUID
    document_type: LoincCode = Field(
        description="LOINC code: 11502-2 lab report, 18842-5 discharge summary, "
        "11488-4 consult note…"
    )
    title: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TITLE_CHARS)] | None
    ) = None
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    classification: Classification = Classification.NORMAL
    filename: Annotated[str, StringConstraints(max_length=MAX_FILENAME_CHARS)] | None = None
    on_duplicate: OnDuplicate = OnDuplicate.REJECT


class VersionFields(CleanTextModel):
    model_config = ConfigDict(extra="ignore")

    filename: Annotated[str, StringConstraints(max_length=MAX_FILENAME_CHARS)] | None = None
    on_duplicate: OnDuplicate = OnDuplicate.REJECT


class DocumentOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    version: int
    filename: str
    original_filename: str
    content_type: str
    size: int
    sha256: str
    document_type: str
    title: str
    description: str | None
    classification: Classification
    status: DocumentStatus
    created_at: datetime
    updated_at: datetime
    uploaded_by: str
    deleted_at: datetime | None = None
    deleted_by: str | None = None
    delete_reason: str | None = None


class VersionOut(BaseModel):
    version: int
    filename: str
    original_filename: str
    content_type: str
    size: int
    sha256: str
    state: VersionState
    created_at: datetime
    uploaded_by: str


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None


class VersionList(BaseModel):
    items: list[VersionOut]


class DownloadUrlRequest(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    expires_in: int | None = Field(
        default=None, ge=1, description="Seconds until the link stops working"
    )
    version: int | None = Field(
        default=None, ge=1, le=MAX_DB_INT, description="Defaults to the current version"
    )


class DownloadUrlOut(BaseModel):
    url: str
    expires_at: datetime
    version: int
