"""Legal holds and the appraisal of records past their retention date."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, Date, ForeignKey, Index, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import ClinicalBase
from medvault.db.types import UTCDateTime


class HoldScope(StrEnum):
    PATIENT = "patient"
    DOCUMENT = "document"
    # Every document of a type and/or created within a date range, whoever's.
    QUERY = "query"


class LegalHold(ClinicalBase):
    """A freeze for an inquiry: while active, nothing it covers can be destroyed."""

    __tablename__ = "legal_holds"
    __table_args__ = (Index("ix_legal_holds_active", "released_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    scope: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("patient_refs.id", ondelete="RESTRICT")
    )
    document_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("documents.id", ondelete="RESTRICT")
    )
    document_type: Mapped[str | None] = mapped_column(String(32))
    created_from: Mapped[date | None] = mapped_column(Date)
    created_to: Mapped[date | None] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(String(1000))
    # The inquiry's own reference (a case number, a coroner's reference).
    reference: Mapped[str] = mapped_column(String(200))
    placed_by: Mapped[str] = mapped_column(String(200))
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_by: Mapped[str | None] = mapped_column(String(200))
    release_reason: Mapped[str | None] = mapped_column(String(1000))


class AppraisalState(StrEnum):
    # Past its date and listed; waiting for a records manager's decision.
    DUE = "due"
    # One approval of a two-person rule is in; waiting for a second, different person.
    APPROVED_ONCE = "approved-once"
    # Approved; the destruction job has it.
    APPROVED = "approved"
    DESTROYED = "destroyed"
    # Kept past its date on appraisal (Code §5.2: of continuing value), until ``keep_until``.
    KEPT = "kept"
    # A hold arrived between approval and destruction: nothing was destroyed.
    HELD = "held"
    # A new entry (or a date given since) moved ``retain_until`` past today: not due.
    WITHDRAWN = "withdrawn"


class Appraisal(ClinicalBase):
    """One document found past ``retain_until``: the decision trail before destruction."""

    __tablename__ = "appraisals"
    __table_args__ = (
        Index("ix_appraisals_state", "state", "listed_at"),
        Index("ix_appraisals_document", "document_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="RESTRICT"))
    patient_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    retention_class: Mapped[str] = mapped_column(String(64))
    retain_until: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16), default=AppraisalState.DUE)
    listed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # [{"actor": "user:…", "role": "admin", "at": "…", "reason": "…"}]: who approved.
    approvals: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    keep_until: Mapped[date | None] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(String(1000))


class ExportState(StrEnum):
    QUEUED = "queued"
    BUILDING = "building"
    READY = "ready"
    # Served once through its link: the link answers 410 from then on.
    DOWNLOADED = "downloaded"
    EXPIRED = "expired"
    FAILED = "failed"


class PatientExport(ClinicalBase):
    """A patient's "everything you hold about me" archive (UK GDPR Articles 15 and 20).

    The archive is a ZIP with AES-256 entries under the requester's passphrase, and is
    itself stored as a vault envelope (its own data key wrapped by the keyring), so no
    byte of it is readable in the blob store. The passphrase reaches the worker sealed
    the same way (``sealed_passphrase``) and is erased once the archive is built.
    """

    __tablename__ = "patient_exports"
    __table_args__ = (
        Index("ix_patient_exports_patient", "patient_id", "created_at"),
        Index("ix_patient_exports_expires", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("patient_refs.id", ondelete="RESTRICT")
    )
    # Who asked (the patient, or staff on their behalf): only they see it and its link.
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_role: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=ExportState.QUEUED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    downloaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The passphrase, sealed under its own data key until the archive is built.
    passphrase_kek_id: Mapped[str | None] = mapped_column(String(64))
    passphrase_wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary(255))
    sealed_passphrase: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The archive blob (a vault envelope around the passphrase-encrypted ZIP).
    storage_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    kek_id: Mapped[str | None] = mapped_column(String(64))
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # What went in: {"documents": n, "versions": n, "events": n, "tree_size": n, ...}.
    summary: Mapped[dict[str, object] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(64))
