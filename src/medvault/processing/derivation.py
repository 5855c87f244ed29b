"""The preview and text jobs: decrypt a version, derive in a confined child, seal the result.

Both run only on versions the scanner cleared (or that no scanner will see): a parser
is where a hostile file would strike, so an infected or unscanned-but-pending version
is never handed to one. ``documents.arrival.queue_derivation`` arms them, from the
upload when no scanner is configured, else from the clean verdict or an admin's release.

What a job produces is sealed like a version (``documents.derived``) before its row
commits; what stops it (a limit, an unreadable file) is recorded on the version as a
reason code, never with document content. A failure of the *store* (down, key missing)
is different: it raises, and the queue retries with backoff.

Text goes to the search index through its own job (``search-index``), enqueued in the
transaction that records the text, so a crash between the two loses nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from medvault.crypto.errors import CryptoError, IntegrityError
from medvault.documents import derived, repository
from medvault.documents.content import iter_plaintext, report_corruption
from medvault.documents.models import (
    DerivedKind,
    DeriveState,
    DocumentVersion,
    ScanState,
    VersionState,
)
from medvault.kit.clock import utcnow
from medvault.processing import kinds, queue
from medvault.processing.derive import (
    DeriveFailed,
    DeriveLimits,
    ExtractedText,
    Preview,
    extract_text,
    render_preview,
)
from medvault.processing.queue import SafeJobError
from medvault.processing.reconcile import upload_deadline
from medvault.runtime import Runtime
from medvault.search import index as search_index
from medvault.storage.base import BlobStoreError

logger = logging.getLogger("medvault.processing.derivation")

# Scan states whose bytes a parser may see. RELEASED: an admin judged the detection false.
DERIVABLE_SCAN_STATES = frozenset({ScanState.CLEAN, ScanState.RELEASED, ScanState.NOT_SCANNED})


def limits_for(runtime: Runtime) -> DeriveLimits:
    settings = runtime.settings
    return DeriveLimits(
        max_input_bytes=settings.derive_max_input_bytes,
        max_pixels=settings.derive_max_pixels,
        max_pages=settings.derive_max_pages,
        memory_bytes=settings.derive_memory_mib * 1024 * 1024,
        cpu_seconds=settings.derive_cpu_seconds,
        timeout_seconds=settings.derive_timeout_seconds,
        ocr_languages=settings.ocr_languages,
    )


def run_preview_job(runtime: Runtime, payload: Mapping[str, Any]) -> dict[str, str]:
    version = _derivable(runtime, payload)
    if version is None:
        return {"outcome": "skipped"}
    try:
        preview = render_preview(
            _plaintext(runtime, version), version.content_type, limits_for(runtime)
        )
    except DeriveFailed as failure:
        return _record_failure(runtime, version.id, DerivedKind.PREVIEW, failure)
    try:
        _store_preview(runtime, version, preview)
    except _Gone:
        return {"outcome": "gone"}
    return {"outcome": DeriveState.READY.value}


def run_text_job(runtime: Runtime, payload: Mapping[str, Any]) -> dict[str, str]:
    version = _derivable(runtime, payload)
    if version is None:
        return {"outcome": "skipped"}
    if not runtime.settings.fulltext:
        _set_state(runtime, version.id, DerivedKind.TEXT, DeriveState.NONE, None)
        return {"outcome": "fulltext-off"}
    try:
        extracted = extract_text(
            _plaintext(runtime, version), version.content_type, limits_for(runtime)
        )
    except DeriveFailed as failure:
        return _record_failure(runtime, version.id, DerivedKind.TEXT, failure)
    try:
        _store_text(runtime, version, extracted)
    except _Gone:
        return {"outcome": "gone"}
    return {"outcome": DeriveState.READY.value, "source": extracted.source}


def _derivable(runtime: Runtime, payload: Mapping[str, Any]) -> DocumentVersion | None:
    version_id = uuid.UUID(str(payload["version_id"]))
    with runtime.clinical.read_session() as session:
        version = repository.version_by_id(session, version_id)
    if version is None or version.state != VersionState.AVAILABLE:
        return None
    if version.scan_state not in DERIVABLE_SCAN_STATES:
        # Pending or failed: the clean verdict enqueues this job again. Infected: never.
        return None
    return version


def _plaintext(runtime: Runtime, version: DocumentVersion) -> Iterable[bytes]:
    """The version's bytes, verified, with store failures retried by the queue."""
    if version.size == 0:
        return
    try:
        yield from iter_plaintext(runtime, version, 0, version.size - 1, verify_hash=True)
    except IntegrityError as error:
        report_corruption(runtime, version, str(error))
        raise SafeJobError(f"version {version.id} failed its integrity check") from error
    except (CryptoError, BlobStoreError) as error:
        raise SafeJobError(f"version {version.id} could not be read") from error


def _record_failure(
    runtime: Runtime, version_id: uuid.UUID, kind: DerivedKind, failure: DeriveFailed
) -> dict[str, str]:
    state = DeriveState.UNSUPPORTED if failure.reason == "unsupported-type" else DeriveState.FAILED
    # The reason code only: the child's own words could quote the document.
    logger.info("no %s for version %s: %s", kind.value, version_id, failure.reason)
    _set_state(runtime, version_id, kind, state, failure.reason)
    return {"outcome": state.value, "reason": failure.reason}


def _set_state(
    runtime: Runtime,
    version_id: uuid.UUID,
    kind: DerivedKind,
    state: DeriveState,
    note: str | None,
) -> None:
    with runtime.clinical.session() as session:
        row = repository.version_by_id(session, version_id)
        if row is None:
            return
        if kind == DerivedKind.TEXT:
            row.text_state, row.text_note = state.value, note
        else:
            row.preview_state, row.preview_note = state.value, note
        session.commit()


def check_deadline(runtime: Runtime, *sealed: derived.SealedArtifact) -> None:
    """Refuse to commit a blob the reconciler may already count as an orphan (see there)."""
    deadline = upload_deadline(runtime.settings.reconcile_grace_seconds)
    if any(utcnow() - item.started_at > deadline for item in sealed):
        raise SafeJobError("the derived blob is older than the reconciler allows; retrying")


def _store_preview(runtime: Runtime, version: DocumentVersion, preview: Preview) -> None:
    thumbnail = derived.seal(runtime, preview.thumbnail)
    page = derived.seal(runtime, preview.page)
    sealed = [thumbnail.storage_key, page.storage_key]
    try:
        check_deadline(runtime, thumbnail, page)
        with runtime.clinical.session() as session:
            row = repository.version_by_id(session, version.id)
            if row is None or row.state != VersionState.AVAILABLE:
                raise _Gone
            stale = derived.record(
                session, row, DerivedKind.THUMBNAIL, thumbnail, media_type=preview.media_type
            )
            stale += derived.record(
                session,
                row,
                DerivedKind.PREVIEW,
                page,
                media_type=preview.media_type,
                width=preview.width,
                height=preview.height,
            )
            row.preview_state, row.preview_note = DeriveState.READY.value, None
            session.commit()
    except BaseException:
        _discard(runtime, sealed)
        raise
    _discard(runtime, stale)


def _store_text(runtime: Runtime, version: DocumentVersion, extracted: ExtractedText) -> None:
    sealed = derived.seal(runtime, extracted.text.encode("utf-8"))
    try:
        check_deadline(runtime, sealed)
        with runtime.clinical.session() as session:
            row = repository.version_by_id(session, version.id)
            if row is None or row.state != VersionState.AVAILABLE:
                raise _Gone
            # Before the old text's row is replaced: FTS5 removes a contentless row's
            # tokens only by being given the old text again (else a full rebuild).
            search_index.withdraw_text(session, runtime, row.id)
            stale = derived.record(
                session, row, DerivedKind.TEXT, sealed, media_type=derived.TEXT_MEDIA_TYPE
            )
            row.text_state = DeriveState.READY.value
            row.text_note = "truncated" if extracted.truncated else None
            row.text_source = extracted.source
            queue.enqueue(
                session,
                kinds.SEARCH_INDEX,
                {"document_id": str(row.document_id)},
                dedupe_key=kinds.search_index_key(row.document_id),
            )
            session.commit()
    except BaseException:
        _discard(runtime, [sealed.storage_key])
        raise
    _discard(runtime, stale)


class _Gone(Exception):
    """The version was destroyed or deleted while the job ran: keep nothing."""


def _discard(runtime: Runtime, keys: Iterable[str]) -> None:
    for key in keys:
        try:
            runtime.blobs.delete(key)
        except BlobStoreError:
            # Left for the reconciler, which removes unreferenced blobs under derived/.
            logger.warning("could not delete derived blob %s; the reconciler will", key)
