"""Document API shapes. Nothing here ever carries a storage key or server path."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from medvault.documents.active_content import ActiveContent
from medvault.documents.models import (
    Classification,
    DeriveState,
    DocumentStatus,
    ScanState,
    VersionState,
)
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


# What ``active_content`` may hold; "unreadable" is ``documents.arrival.UNREADABLE_PDF``.
_ACTIVE_KINDS = ", ".join(f"`{kind.value}`" for kind in ActiveContent)
ACTIVE_CONTENT_DESCRIPTION = (
    "PDFs only: the kinds of active content found in the file "
    f'({_ACTIVE_KINDS}); an empty list when it has none, `["unreadable"]` when the '
    "file could not be parsed as a PDF. null for other types, and for PDFs stored "
    "before the check existed."
)


class ScanOut(BaseModel):
    """What the malware scanner said about one version."""

    state: ScanState = Field(
        description="not-scanned: no scanner was configured when it was stored; pending: "
        "queued or scanning; clean; infected: quarantined, its content is refused (403); "
        "failed: no verdict yet, retried; released: flagged, then released by an "
        "administrator as a false positive"
    )
    engine: str | None = Field(description="Scanner and signature database versions")
    signature: str | None = Field(description="The matching signature, when infected")
    scanned_at: datetime | None = Field(description="When the last verdict was recorded")


class DerivedOut(BaseModel):
    """What was derived from one version: its preview and its searchable text."""

    preview: DeriveState = Field(
        description="none: not made (stored before previews existed, or previews are off); "
        "pending: waiting for the malware scan or the worker; ready: "
        "`GET .../preview` serves it; failed: a limit stopped it or the file could not be "
        "read (`preview_reason` says which); unsupported: a type without previews"
    )
    preview_reason: str | None = Field(
        description="Why there is no preview: a stable code such as `too-many-pixels`, "
        "`unreadable`, `timeout` or `memory`"
    )
    text: DeriveState = Field(
        description="The same states for the text extracted for full-text search"
    )
    text_reason: str | None = Field(
        description="Why there is no text, or `truncated` when only the first pages were read"
    )
    text_source: str | None = Field(
        description="`text-layer` (the PDF's own text), `ocr` (Tesseract) or `mixed`"
    )


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
    scan: ScanOut = Field(description="The current version's malware scan")
    active_content: list[str] | None = Field(description=ACTIVE_CONTENT_DESCRIPTION)
    derived: DerivedOut = Field(description="The current version's preview and text")
    deleted_at: datetime | None = None
    deleted_by: str | None = None
    delete_reason: str | None = None
    retention_class: str | None = Field(
        default=None,
        description='The retention class its type falls in (README, "Records governance")',
    )
    retain_until: date | None = Field(
        default=None,
        description="When it may be appraised for destruction; null: kept indefinitely "
        "(no rule applies yet, e.g. a GP record of a living patient)",
    )
    destroyed_at: datetime | None = Field(
        default=None, description="Set on a destroyed record's tombstone"
    )


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
    scan: ScanOut
    active_content: list[str] | None = Field(description=ACTIVE_CONTENT_DESCRIPTION)
    derived: DerivedOut


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
