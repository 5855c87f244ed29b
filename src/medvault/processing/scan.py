"""The malware-scan job: stream a version's plaintext to clamd and record the verdict.

Plaintext only ever exists in this process's memory, one ~1 MiB piece at a time, on
its way from the decrypting reader to clamd's socket. An infected version is
quarantined (the reading service refuses it everywhere) and raises an alarm: an ERROR
line naming ids only, a metric, and an audit event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import Counter

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.crypto.errors import CryptoError, IntegrityError
from medvault.documents import arrival, derived, repository
from medvault.documents.content import iter_plaintext, report_corruption
from medvault.documents.models import DeriveState, DocumentVersion, ScanState, VersionState
from medvault.kit.clock import utcnow
from medvault.processing import kinds, queue
from medvault.processing.clamd import ClamdClient, ScannerError, ScanVerdict
from medvault.processing.queue import SafeJobError
from medvault.processing.worker import JobInterrupted
from medvault.runtime import Runtime
from medvault.search import index as search_index
from medvault.storage.base import BlobStoreError

logger = logging.getLogger("medvault.processing.scan")

SCAN_JOB = kinds.SCAN
SCAN_VERDICTS = Counter(
    "medvault_scan_verdicts_total", "Malware scan results by verdict", ["verdict"]
)
SCAN_ACTOR = "malware-scan"


def run_scan(
    runtime: Runtime,
    scanner: ClamdClient,
    payload: Mapping[str, Any],
    stopping: Callable[[], bool] = lambda: False,
) -> dict[str, str]:
    """Scan one version; ``stopping`` lets a worker shutting down give the job back."""
    version_id = uuid.UUID(str(payload["version_id"]))
    with runtime.clinical.read_session() as session:
        version = repository.version_by_id(session, version_id)
    if version is None or version.state == VersionState.DESTROYED:
        # Deleted for good (or destroyed as infected) since it was queued: nothing to scan.
        return {"outcome": "gone"}
    if version.state == VersionState.CORRUPT:
        raise SafeJobError(f"version {version_id} is marked corrupt; not scanned")
    try:
        verdict = scanner.scan(_interruptible(_plaintext(runtime, version), stopping))
    except ScannerError as error:
        _record_failure(runtime, version_id)
        SCAN_VERDICTS.labels("failed").inc()
        raise SafeJobError(str(error)) from error
    except IntegrityError as error:
        # The bytes are not the ones stored: the integrity alarm, not a scan verdict.
        report_corruption(runtime, version, str(error))
        raise SafeJobError(f"version {version_id} failed its integrity check") from error
    except (CryptoError, BlobStoreError) as error:
        _record_failure(runtime, version_id)
        raise SafeJobError(f"version {version_id} could not be read") from error
    return _record_verdict(runtime, version, verdict)


def _interruptible(pieces: Iterable[bytes], stopping: Callable[[], bool]) -> Iterator[bytes]:
    for piece in pieces:
        if stopping():
            # Released, not failed: another worker scans it from the start.
            raise JobInterrupted
        yield piece


def _plaintext(runtime: Runtime, version: DocumentVersion) -> Iterable[bytes]:
    if version.size == 0:
        return [b""]
    # verify_hash: a scan also proves the bytes are the ones that were stored.
    return iter_plaintext(runtime, version, 0, version.size - 1, verify_hash=True)


def _record_failure(runtime: Runtime, version_id: uuid.UUID) -> None:
    with runtime.clinical.session() as session:
        row = repository.version_by_id(session, version_id)
        # A verdict from an earlier scan stands; only an unscanned version shows failed.
        if row is not None and row.scan_state in (ScanState.PENDING, ScanState.NOT_SCANNED):
            row.scan_state = ScanState.FAILED
            session.commit()


def _record_verdict(
    runtime: Runtime, version: DocumentVersion, verdict: ScanVerdict
) -> dict[str, str]:
    state = ScanState.INFECTED if verdict.infected else ScanState.CLEAN
    with runtime.clinical.session() as session:
        row = repository.version_by_id(session, version.id)
        if row is None:
            return {"outcome": "gone"}
        if row.scan_state == ScanState.RELEASED and verdict.infected:
            # An admin already judged this detection; a rescan repeating it changes nothing.
            state = ScanState.RELEASED
        previous = row.scan_state
        row.scan_state = state
        row.scan_engine = verdict.engine[:200]
        row.scan_signature = (verdict.signature or "")[:200] or None
        row.scanned_at = utcnow()
        if state == ScanState.CLEAN and previous != ScanState.CLEAN:
            # Now, and only now, may a parser see it: previews and text.
            arrival.queue_derivation(session, runtime, row)
        stale: list[str] = []
        if state == ScanState.INFECTED and previous != state:
            # A rescan with newer signatures caught what an older scan passed: what was
            # derived from it goes too, and its words leave the search index.
            search_index.withdraw_text(session, runtime, row.id)
            stale = derived.remove_for_version(session, row.id)
            row.preview_state = row.text_state = DeriveState.NONE.value
            queue.enqueue(
                session,
                kinds.SEARCH_INDEX,
                {"document_id": str(row.document_id)},
                dedupe_key=kinds.search_index_key(row.document_id),
            )
        if verdict.infected and previous != state:
            audit.record(
                session=session,
                context=AuditContext.system(SCAN_ACTOR),
                action="document.version.quarantined",
                outcome=audit.Outcome.FAILURE,
                resource_type="DocumentVersion",
                resource_id=row.id,
                patient_id=repository.patient_of(session, row.document_id),
                details={
                    "document_id": str(row.document_id),
                    "version": row.version,
                    "signature": row.scan_signature,
                    "engine": row.scan_engine,
                },
            )
        session.commit()
    for key in stale:
        arrival.discard_derived(runtime, key)
    SCAN_VERDICTS.labels(state.value).inc()
    if state == ScanState.INFECTED:
        logger.error(
            "MALWARE ALARM: version %s of document %s matched %s; quarantined",
            version.id,
            version.document_id,
            verdict.signature,
        )
    return {"outcome": state.value}
