"""What happens to every new version besides being stored: checks before its row
commits, and the background jobs armed in the same transaction.

Every face that adds a version (REST upload, FHIR Binary, DocumentReference and
transaction) calls both steps:

1. :func:`inspect` runs on the durable blob, before the transaction: it refuses an
   upload whose blob is too old to commit safely (the reconciler's grace period), and
   looks for active content in PDFs (refused when ``MEDVAULT_REFUSE_ACTIVE_PDF``).
2. :func:`arm` runs inside the transaction that adds the row: it sets the scan state
   and enqueues the version's jobs. They are rows in the same transaction (a
   transactional outbox), so a version that commits always gets its jobs, and a
   rolled-back one never does.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from medvault.documents.active_content import UnreadablePdf, find_active_content
from medvault.documents.ingest import IngestResult
from medvault.documents.models import DeriveState, Document, DocumentVersion, ScanState
from medvault.documents.plaintext_file import PlaintextFile
from medvault.governance import retention
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.problems import Problem
from medvault.processing import kinds, queue
from medvault.processing.reconcile import upload_deadline
from medvault.runtime import Runtime
from medvault.storage.base import BlobStoreError

logger = logging.getLogger(__name__)

PDF = "application/pdf"
# Recorded instead of a list of kinds when the file claims to be a PDF but qpdf cannot
# parse it: nothing can be said about what it would do in a reader.
UNREADABLE_PDF = "unreadable"


class ActiveContentRefused(Problem):
    status, slug, title = 422, "active-content", N_("The PDF holds active content")


class UploadExpired(Problem):
    status, slug, title = 408, "upload-expired", N_("The upload took too long to complete")


@dataclass(frozen=True)
class Inspection:
    # Comma-separated ActiveContent kinds ("" for none); None for anything but a PDF.
    active_content: str | None = None


def inspect(runtime: Runtime, result: IngestResult) -> Inspection:
    """Checks on a stored blob before its row is written; raises a problem to refuse it."""
    settings = runtime.settings
    if utcnow() - result.started_at > upload_deadline(settings.reconcile_grace_seconds):
        # Past this, the reconciler may already count the blob as an orphan.
        raise UploadExpired(N_("The upload took too long; send it again."))
    if result.content_type != PDF:
        return Inspection()
    found = _active_content(runtime, result)
    if found and settings.refuse_active_pdf:
        # Fail closed: what cannot be parsed cannot be shown to be free of scripts.
        # Whole sentences, so that each translates as one.
        detail = (
            N_(
                "This file could not be read as a PDF, so it cannot be checked for active "
                "content, which this vault does not accept. Print it to a new PDF and "
                "upload that."
            )
            if found == UNREADABLE_PDF
            else N_(
                "This file contains active content (scripts, automatic actions, launch "
                "actions or embedded files), which this vault does not accept. Print it to "
                "a new PDF and upload that."
            )
        )
        raise ActiveContentRefused(detail, active_content=found.split(","))
    return Inspection(active_content=found)


def _active_content(runtime: Runtime, result: IngestResult) -> str:
    with io.BufferedReader(PlaintextFile(runtime, result)) as source:
        try:
            return ",".join(sorted(find_active_content(source, size=result.size)))
        except UnreadablePdf:
            return UNREADABLE_PDF


def arm(session: Session, runtime: Runtime, version: DocumentVersion) -> None:
    """Set the new version's scan state and enqueue its jobs, in the caller's transaction."""
    settings = runtime.settings
    # The version is new in this transaction, so its jobs are too (``fresh``): no
    # lookups for existing ones. The caller's next flush inserts them together with the
    # version and the rest of the upload, in one unit of work: on SQLite the upload's
    # rows are written under the one write lock, where every flush's bookkeeping counts.
    if settings.clamd_url is not None:
        queue_scan(session, version, fresh=True)
        # Previews and text wait for the clean verdict (processing.scan arms them).
        mark_derivation_pending(runtime, version)
    else:
        version.scan_state = ScanState.NOT_SCANNED
        queue_derivation(session, runtime, version, fresh=True)
    _arm_retention(session, runtime, version)
    if settings.fhir_attachment_sha1 and version.sha1 is None:
        queue.enqueue(
            session,
            kinds.FHIR_SHA1,
            {"version_id": str(version.id)},
            dedupe_key=kinds.sha1_key(version.id),
            fresh=True,
        )


def _arm_retention(session: Session, runtime: Runtime, version: DocumentVersion) -> None:
    """The new entry moves the record's "last entry": dates follow in this transaction."""
    document = session.get(Document, version.document_id)
    if document is None:
        return
    # No autoflush: the upload's rows go in together at its next flush.
    with session.no_autoflush:
        retention.on_new_entry(session, runtime.retention, document, utcnow().date())


def queue_scan(session: Session, version: DocumentVersion, *, fresh: bool = False) -> None:
    """Enqueue a scan (or rescan) of ``version``; one live scan job per version.

    A version without a verdict (new, never scanned, or failed) shows pending until the
    job runs; a verdict it already has stands until the rescan replaces it.
    """
    if version.scan_state in (None, ScanState.NOT_SCANNED, ScanState.FAILED):
        version.scan_state = ScanState.PENDING
    queue.enqueue(
        session,
        kinds.SCAN,
        {"version_id": str(version.id)},
        dedupe_key=kinds.scan_key(version.id),
        fresh=fresh,
    )


def mark_derivation_pending(
    runtime: Runtime, version: DocumentVersion, *, preview: bool = True, text: bool = True
) -> None:
    """Show the preview and text as coming, before the scan that must precede them."""
    settings = runtime.settings
    if preview and settings.previews:
        version.preview_state = DeriveState.PENDING
    if text and settings.fulltext:
        version.text_state = DeriveState.PENDING


def queue_derivation(
    session: Session,
    runtime: Runtime,
    version: DocumentVersion,
    *,
    preview: bool = True,
    text: bool = True,
    fresh: bool = False,
) -> None:
    """Enqueue the preview and text jobs of a version parsers may now read.

    Called in the transaction that makes it readable: the upload when no scanner is
    configured, the clean verdict, an admin's release, or a backfill.
    """
    mark_derivation_pending(runtime, version, preview=preview, text=text)
    settings = runtime.settings
    payload = {"version_id": str(version.id)}
    if preview and settings.previews:
        key = kinds.preview_key(version.id)
        queue.enqueue(session, kinds.PREVIEW, payload, dedupe_key=key, fresh=fresh)
    if text and settings.fulltext:
        key = kinds.text_key(version.id)
        queue.enqueue(session, kinds.TEXT, payload, dedupe_key=key, fresh=fresh)


def discard_derived(runtime: Runtime, storage_key: str) -> None:
    """Delete a derived blob after its row is gone; the reconciler retries a failure."""
    try:
        runtime.blobs.delete(storage_key)
    except BlobStoreError:
        logger.warning("could not delete a derived blob now; the reconciler will")
