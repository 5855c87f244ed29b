"""Destroying a record at the end of its retention, and the certificate that proves it.

What "destroyed" means here (README, "Records governance"):

* every version's blob and every derivative (previews, extracted text) is deleted;
* every data key is deleted from the database, so the vault itself can never decrypt
  the record again, whatever copy of a blob turns up;
* the search index loses it (on SQLite the FTS index is optimised, so no old segment
  keeps its words, and freed pages are zeroed with ``secure_delete``);
* the metadata becomes a tombstone: title, description, file names and delete reason
  replaced; kept are the ids, type, dates, sizes and SHA-256s the certificate names;
* a **destruction certificate** goes into the tamper-evident audit log as the
  ``document.destroyed`` event: what, when, under which rule, approved by whom, and
  the SHA-256 of every version destroyed.

Everything in the database happens in one transaction with the certificate and a last
hold check; blobs are deleted after the commit (a crash in between leaves ciphertext
whose keys are gone, and the reconciler removes it as an orphan).
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.crypto.keyring import DESTROYED_KEK_ID
from medvault.documents.models import (
    Document,
    DocumentStatus,
    DocumentVersion,
    VersionDerivative,
    VersionState,
)
from medvault.governance import retention
from medvault.governance.holds import hold_on
from medvault.governance.models import Appraisal, AppraisalState
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime
from medvault.search import index as search_index
from medvault.storage.base import discard

logger = logging.getLogger(__name__)

TOMBSTONE_TITLE = "[destroyed]"
TOMBSTONE_FILENAME = "destroyed"
# What a destroyed version's key columns hold: nothing that unwraps anything.
NO_KEY = b""


@dataclass(frozen=True)
class Outcome:
    state: AppraisalState
    blobs: int = 0

    def summary(self) -> dict[str, Any]:
        return {"outcome": self.state.value, "blobs_deleted": self.blobs}


def _certificate(
    document: Document,
    versions: list[DocumentVersion],
    appraisal: Appraisal,
    runtime: Runtime,
    derivatives: int,
) -> dict[str, Any]:
    retention_class = runtime.retention.classes.get(appraisal.retention_class)
    return {
        "document_id": str(document.id),
        "document_type": document.document_type,
        "created_at": document.created_at.isoformat(),
        "retention_class": appraisal.retention_class,
        "rule": retention_class.describe() if retention_class else None,
        "citation": retention_class.citation if retention_class else None,
        "retain_until": appraisal.retain_until.isoformat(),
        "appraisal_id": str(appraisal.id),
        "listed_at": appraisal.listed_at.isoformat(),
        "approved_by": [
            {"actor": item["actor"], "role": item["role"], "at": item["at"]}
            for item in appraisal.approvals
        ],
        "versions": [
            {
                "version": version.version,
                "sha256": version.sha256,
                "size": version.size,
                "content_type": version.content_type,
                "created_at": version.created_at.isoformat(),
            }
            for version in versions
        ],
        "derivatives": derivatives,
        "destroyed_at": utcnow().isoformat(),
    }


def tombstone(
    session: Session, runtime: Runtime, document: Document
) -> tuple[list[DocumentVersion], list[str], int]:
    """Strip a document to its tombstone; returns its versions, blob keys, derivative count."""
    # First: the index's delete needs the text it indexed, read through keys still here.
    search_index.remove_document(session, runtime, document.id)
    versions = list(
        session.scalars(
            select(DocumentVersion)
            .where(DocumentVersion.document_id == document.id)
            .order_by(DocumentVersion.version)
        )
    )
    version_ids = [version.id for version in versions]
    derivatives = list(
        session.scalars(
            select(VersionDerivative).where(VersionDerivative.version_id.in_(version_ids))
        )
    )
    keys = [version.storage_key for version in versions if version.state != VersionState.DESTROYED]
    keys += [derivative.storage_key for derivative in derivatives]
    session.execute(delete(VersionDerivative).where(VersionDerivative.version_id.in_(version_ids)))
    for version in versions:
        version.state = VersionState.DESTROYED
        version.wrapped_dek = NO_KEY
        version.kek_id = DESTROYED_KEK_ID
        version.filename = TOMBSTONE_FILENAME
        version.original_filename = TOMBSTONE_FILENAME
        version.scan_signature = None
        version.preview_note = None
        version.text_note = None
    now = utcnow()
    document.title = TOMBSTONE_TITLE
    document.description = None
    document.delete_reason = None
    document.status = DocumentStatus.DELETED.value
    document.deleted_at = document.deleted_at or now
    document.destroyed_at = now
    document.updated_at = now
    return versions, keys, len(derivatives)


def _checkpoint_sqlite(runtime: Runtime) -> None:
    """Fold the WAL into the database and empty it: old frames held the erased pages.

    Outside any transaction (a checkpoint cannot run inside one), on a raw connection.
    Best effort: a reader holding an old snapshot keeps the WAL, so it is retried by the
    next destruction and by SQLite's own checkpoints; the log says when it did not finish.
    """
    if not runtime.clinical.is_sqlite:
        return
    raw = runtime.clinical.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy = cursor.fetchone()
        cursor.close()
    except sqlite3.Error as exc:
        logger.warning("WAL checkpoint after a destruction failed: %s", type(exc).__name__)
        return
    finally:
        raw.close()
    if busy is not None and busy[0]:
        logger.warning("WAL checkpoint after a destruction was blocked by a reader")


def _blocked(
    session: Session, appraisal: Appraisal, document: Document, state: AppraisalState, why: str
) -> Outcome:
    appraisal.state = state.value
    appraisal.note = why
    audit.record(
        session=session,
        context=AuditContext.system("destruction"),
        action="retention.destruction.blocked",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={"appraisal_id": str(appraisal.id), "why": why},
    )
    session.commit()
    return Outcome(state)


def destroy(runtime: Runtime, appraisal_id: uuid.UUID) -> Outcome:
    """The destruction job: approved → tombstone + certificate, then blobs (idempotent)."""
    with runtime.clinical.session() as session:
        appraisal = session.scalar(
            select(Appraisal).where(Appraisal.id == appraisal_id).with_for_update()
        )
        if appraisal is None or appraisal.state != AppraisalState.APPROVED:
            return Outcome(AppraisalState(appraisal.state) if appraisal else AppraisalState.DUE)
        document = session.scalar(
            select(Document).where(Document.id == appraisal.document_id).with_for_update()
        )
        assert document is not None  # a foreign key with ON DELETE RESTRICT
        hold = hold_on(session, document)
        if hold is not None:
            return _blocked(session, appraisal, document, AppraisalState.HELD, f"hold {hold.id}")
        retention.refresh_patient(session, runtime.retention, document.patient_id)
        session.refresh(document)
        if document.retain_until is None or document.retain_until >= utcnow().date():
            return _blocked(
                session, appraisal, document, AppraisalState.WITHDRAWN, "retention date moved"
            )
        versions, keys, derivatives = tombstone(session, runtime, document)
        certificate = _certificate(document, versions, appraisal, runtime, derivatives)
        appraisal.state = AppraisalState.DESTROYED.value
        session.flush()
        audit.record(
            session=session,
            context=AuditContext.system("destruction"),
            action="document.destroyed",
            resource_type="Document",
            resource_id=document.id,
            patient_id=document.patient_id,
            details={"certificate": certificate},
        )
        if runtime.clinical.is_sqlite:
            # Contentless FTS5 deletes leave the old segments until a merge: optimise,
            # so no segment keeps the record's words (connections run secure_delete).
            search_index.optimize_fts(session)
        session.commit()
    # A blob left behind has no key any more: unreadable ciphertext the reconciler removes.
    blobs = discard(runtime.blobs, keys, finisher="the reconciler")
    _checkpoint_sqlite(runtime)
    return Outcome(AppraisalState.DESTROYED, blobs)
