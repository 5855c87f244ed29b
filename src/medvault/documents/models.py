"""Documents and their immutable versions."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import ClinicalBase
from medvault.db.types import UTCDateTime


class DocumentStatus(StrEnum):
    CURRENT = "current"
    DELETED = "deleted"


class Classification(StrEnum):
    NORMAL = "normal"
    RESTRICTED = "restricted"
    VERY_RESTRICTED = "very-restricted"


class VersionState(StrEnum):
    AVAILABLE = "available"
    CORRUPT = "corrupt"
    # An infected version an admin destroyed: its blob is gone, its row and audit stay.
    DESTROYED = "destroyed"


class ScanState(StrEnum):
    """Where a version stands with the malware scanner (see ``processing.scan``)."""

    # No scanner was configured when it was stored; `medvault scan --all` catches up.
    NOT_SCANNED = "not-scanned"
    PENDING = "pending"
    CLEAN = "clean"
    # Quarantined: its content is never served until an admin releases it.
    INFECTED = "infected"
    # The scanner could not give a verdict (unreachable, too large); retried by a job.
    FAILED = "failed"
    # Infected, then released by an admin who judged the detection false: served again.
    RELEASED = "released"


class DeriveState(StrEnum):
    """Where a version stands with a derived artifact: its preview, or its text."""

    # Never attempted: stored before previews/text existed, or the feature is off.
    # `medvault previews backfill` / `medvault search reindex --extract` catch up.
    NONE = "none"
    # Waiting for the scan to say clean (or for the job to run).
    PENDING = "pending"
    READY = "ready"
    # A limit stopped it or the file could not be read; the note says which.
    FAILED = "failed"
    # Not a type this vault renders or reads (DICOM, say): the portal shows a type icon.
    UNSUPPORTED = "unsupported"


class DerivedKind(StrEnum):
    THUMBNAIL = "thumbnail"
    PREVIEW = "preview"
    TEXT = "text"


class DocumentOrigin(StrEnum):
    """Who authored a document: decides who may change it (see ``access.authorship``)."""

    # Uploaded by the patient themselves (portal, or their patient-bound app token).
    PATIENT = "patient"
    # Written or filed by the care side: clinicians, service accounts, the vault itself.
    STAFF = "staff"


class Document(ClinicalBase):
    __tablename__ = "documents"
    __table_args__ = (
        # Keyset pagination walks these newest-first; each filter has its own index.
        Index("ix_documents_created", "created_at", "id"),
        Index("ix_documents_patient_created", "patient_id", "created_at", "id"),
        Index("ix_documents_type_created", "document_type", "created_at", "id"),
        Index("ix_documents_retain_until", "retain_until"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("patient_refs.id", ondelete="RESTRICT")
    )
    document_type: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    classification: Mapped[str] = mapped_column(String(20), default=Classification.NORMAL)
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.CURRENT)
    current_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    # Recorded once at creation; never changes when someone else adds a version.
    origin: Mapped[str] = mapped_column(
        String(16), default=DocumentOrigin.STAFF, server_default=DocumentOrigin.STAFF.value
    )
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_by: Mapped[str | None] = mapped_column(String(200))
    delete_reason: Mapped[str | None] = mapped_column(String(500))
    # Records governance (``governance.retention``): the class its type falls in and the
    # date it may be appraised for destruction; NULL: keep indefinitely (or not computed).
    retention_class: Mapped[str | None] = mapped_column(String(64))
    retain_until: Mapped[date | None] = mapped_column(Date)
    # Destroyed under the schedule: a tombstone (status "deleted", metadata replaced,
    # data keys gone); its certificate is the ``document.destroyed`` audit event.
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DocumentVersion(ClinicalBase):
    """One immutable upload. The blob under ``storage_key`` is never rewritten.

    ``kek_id``/``wrapped_dek`` are the authoritative wrap of the data key: key
    rotation rewrites these two columns and leaves the blob alone.
    """

    __tablename__ = "document_versions"
    __table_args__ = (
        UniqueConstraint("document_id", "version", name="uq_document_versions_number"),
        Index("ix_document_versions_sha256", "sha256"),
        Index("ix_document_versions_kek", "kek_id"),
        Index("ix_document_versions_scan", "scan_state"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    original_filename: Mapped[str] = mapped_column(String(1024))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # SHA-1 (hex) for FHIR's Attachment.hash, computed during ingest. NULL for versions
    # stored before it existed, until `medvault fhir backfill-hashes` streams them.
    sha1: Mapped[str | None] = mapped_column(String(40))
    storage_key: Mapped[str] = mapped_column(String(255), unique=True)
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary(255))
    state: Mapped[str] = mapped_column(String(16), default=VersionState.AVAILABLE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    scan_state: Mapped[str] = mapped_column(
        String(16), default=ScanState.NOT_SCANNED, server_default=ScanState.NOT_SCANNED.value
    )
    # "ClamAV 1.4.6/27480/Thu Dec  3 08:40:53 2026": which engine and signatures said so.
    scan_engine: Mapped[str | None] = mapped_column(String(200))
    scan_signature: Mapped[str | None] = mapped_column(String(200))
    scanned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # PDFs only: comma-separated kinds from ``documents.active_content`` ("" when none);
    # NULL for other types and for versions stored before the check existed.
    active_content: Mapped[str | None] = mapped_column(String(200))
    # When the integrity scrub last re-read and verified it; NULL: never, so it is due
    # a scrub period after created_at (processing.scrub).
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Previews and extracted text (``processing.derivation``); the notes hold a reason
    # code such as "too-many-pixels" when a limit stopped them, never document content.
    preview_state: Mapped[str] = mapped_column(
        String(16), default=DeriveState.NONE, server_default=DeriveState.NONE.value
    )
    preview_note: Mapped[str | None] = mapped_column(String(64))
    text_state: Mapped[str] = mapped_column(
        String(16), default=DeriveState.NONE, server_default=DeriveState.NONE.value
    )
    text_note: Mapped[str | None] = mapped_column(String(64))
    # "text-layer", "ocr" or "mixed": where the extracted text came from.
    text_source: Mapped[str | None] = mapped_column(String(16))


class VersionDerivative(ClinicalBase):
    """Something made from a version (a thumbnail, a page preview, its text), encrypted.

    Stored like a version: its own data key wrapped by the keyring, the same segmented
    envelope, an immutable key under ``derived/`` bound to this row's id. So a preview
    or an extracted text is never in plaintext outside the process that made it, and
    key rotation rewraps these keys with the versions'.
    """

    __tablename__ = "version_derivatives"
    __table_args__ = (
        UniqueConstraint("version_id", "kind", name="uq_version_derivatives_kind"),
        Index("ix_version_derivatives_kek", "kek_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("document_versions.id", ondelete="RESTRICT")
    )
    kind: Mapped[str] = mapped_column(String(16))
    media_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255), unique=True)
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary(255))
    # Pixels of an image derivative; NULL for text.
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ComposeDraft(ClinicalBase):
    """A Create-document form autosaved while it is being written: one per user.

    It is clinical content (a patient, a diagnosis, medications), so it is sealed like
    a version: its own data key wrapped by the keyring (so key rotation rewraps it too),
    AES-GCM over the form's fields with this row's id and its user as associated data.
    Nothing of it is readable in the database. It goes when the document is stored,
    when its author discards it, or ``compose.drafts.DRAFT_TTL`` after its last save.
    """

    __tablename__ = "compose_drafts"
    __table_args__ = (Index("ix_compose_drafts_saved", "saved_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # The author (a user of the auth database: no foreign key across databases).
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary(255))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime)
