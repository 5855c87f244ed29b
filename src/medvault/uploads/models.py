"""Resumable (tus) uploads in progress: the upload, and the encrypted chunks it holds.

An upload's state lives here and in the blob store, never in a process, so any
instance can take the next request of any upload.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import ClinicalBase
from medvault.db.types import UTCDateTime


class UploadStatus(StrEnum):
    # Taking bytes. An upload with every byte but no document yet is still receiving:
    # its completion failed for a passing reason (a database restart) and is retried.
    RECEIVING = "receiving"
    # The document exists (``document_id``); the row stays so that HEAD still answers.
    COMPLETE = "complete"
    # Refused for good (wrong type, duplicate, checksum of the whole file): its chunks
    # are gone and every further request answers 410 with ``refusal`` as the reason.
    REFUSED = "refused"


class Upload(ClinicalBase):
    __tablename__ = "uploads"

    # Random (122 bits): the upload's URL is its only name, and must not be guessable.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # Whose it is: only this principal may see, append to or end it.
    owner_kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    # The target: a patient (a new document) or a document (a new version of it).
    patient_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    document_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # The document fields from Upload-Metadata, validated at creation.
    fields: Mapped[dict[str, str]] = mapped_column(JSON)
    # Upload-Metadata as the client sent it: HEAD must return it unchanged.
    metadata_header: Mapped[str] = mapped_column(String(4096), default="")
    length: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    # Chunks are numbered in order; the next one gets this number.
    next_chunk: Mapped[int] = mapped_column(Integer, default=0)
    content_type: Mapped[str | None] = mapped_column(String(127), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.RECEIVING.value)
    refusal: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_document_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    result_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A lease, not a lock held by a connection: the request appending holds it, renews
    # it while it works, and a crashed holder's lease simply runs out.
    lock_token: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    lock_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_uploads_expires", "expires_at"),)


class UploadChunk(ClinicalBase):
    """Bytes ``offset .. offset+size`` of an upload: one envelope blob with its own key.

    Every chunk is sealed under a fresh data key, so no (key, nonce) pair can repeat
    however requests end, fail or retry (docs/encryption-format.md, "Resumable uploads").
    """

    __tablename__ = "upload_chunks"

    upload_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The envelope's id (its associated data) and the blob's name.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(255))
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary(255))
