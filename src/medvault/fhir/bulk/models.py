"""A bulk export and its output files, in the clinical database."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import ClinicalBase
from medvault.db.types import UTCDateTime


class ExportState(StrEnum):
    ACCEPTED = "accepted"  # enqueued, not yet picked up
    RUNNING = "running"
    COMPLETE = "complete"  # outputs ready (possibly with error files)
    FAILED = "failed"  # nothing exported; the error file says why
    CANCELLED = "cancelled"  # DELETE by its owner: outputs removed
    EXPIRED = "expired"  # past its TTL: outputs removed


class BulkExport(ClinicalBase):
    """One ``$export`` request.

    The requesting principal is stored by identity (kind, id and, for a login, the
    session), never as a snapshot of its rights: the job resolves it again when it runs,
    so a token revoked or a user disabled after the kick-off exports nothing. Only that
    same principal may poll, cancel or download. No patient data lives here: the
    request URL holds resource types and an instant only.
    """

    __tablename__ = "fhir_bulk_exports"
    __table_args__ = (
        Index("ix_fhir_bulk_exports_expires", "state", "expires_at"),
        Index("ix_fhir_bulk_exports_owner", "principal_kind", "principal_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # "patient" (Patient/$export) or "system" ($export).
    level: Mapped[str] = mapped_column(String(16))
    principal_kind: Mapped[str] = mapped_column(String(16))
    principal_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    # A login's session (refresh-token family): logging out ends its pending exports too.
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor_id: Mapped[str] = mapped_column(String(200))
    actor_role: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(64))
    # The kick-off URL as the client sent it (the manifest's ``request``).
    request_url: Mapped[str] = mapped_column(Text)
    # The FHIR base at kick-off: attachment URLs in the output are absolute.
    base_url: Mapped[str] = mapped_column(String(500))
    # Comma-separated resource types, in output order.
    types: Mapped[str] = mapped_column(String(200))
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default=ExportState.ACCEPTED)
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Free text for X-Progress ("12 of 40 patients"): counts only.
    progress: Mapped[str | None] = mapped_column(String(100))
    transaction_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BulkExportFile(ClinicalBase):
    """One encrypted NDJSON output (or error) file of an export.

    Sealed like a version: its own data key wrapped by the keyring, the segmented
    envelope bound to this row's id, so ``documents.content.iter_plaintext`` reads it.
    """

    __tablename__ = "fhir_bulk_export_files"
    __table_args__ = (Index("ix_fhir_bulk_export_files_export", "export_id", "name", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    export_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("fhir_bulk_exports.id", ondelete="CASCADE")
    )
    # "output" or "error" (the manifest's two lists).
    role: Mapped[str] = mapped_column(String(16))
    resource_type: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    count: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255), unique=True)
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
