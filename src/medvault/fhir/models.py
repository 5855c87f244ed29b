"""FHIR-only state in the clinical database."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import ClinicalBase
from medvault.db.types import UTCDateTime


class BinaryDraft(ClinicalBase):
    """A document stored by ``POST /fhir/Binary`` that still awaits its DocumentReference.

    FHIR lets a client upload the bytes first and describe them afterwards. In the
    vault every blob belongs to a document of one patient from the moment it is
    stored (so it is encrypted, scoped and audited like any other), so the Binary
    becomes a document at once and this row marks it as not yet described: only such
    a document may be claimed by ``POST /fhir/DocumentReference`` with
    ``attachment.url``. Written in the upload's own transaction, so a document is
    never a draft without its row or the other way round.
    """

    __tablename__ = "fhir_binary_drafts"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
