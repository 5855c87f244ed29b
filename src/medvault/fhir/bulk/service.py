"""Bulk export use cases: kick-off, status, cancel and download, without HTTP.

Like every service these add rows and audit events to the caller's session and flush;
the route commits once, before it answers (for a download, before the first byte).
An export is its requester's alone: to anyone else it does not exist (404), and the
attempt is audited.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.denials import Denial, denied
from medvault.access.policy import Permission, reaches_every_patient, require
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.crypto.errors import CryptoError, UnknownKekError
from medvault.documents.content import iter_plaintext
from medvault.fhir.bulk import repository
from medvault.fhir.bulk.models import BulkExport, BulkExportFile, ExportState
from medvault.fhir.bulk.parameters import DOCUMENT_REFERENCE, ExportParameters
from medvault.fhir.wire.primitives import instant
from medvault.kit.clock import utcnow
from medvault.kit.problems import (
    Forbidden,
    IntegrityFailure,
    KeyUnavailable,
    NotFound,
    Problem,
    StorageUnavailable,
)
from medvault.processing import kinds, queue
from medvault.processing.models import Job, JobState
from medvault.runtime import Runtime
from medvault.storage import base as storage
from medvault.storage.base import BlobNotFound, BlobStore, BlobStoreError

logger = logging.getLogger(__name__)

NDJSON = "application/fhir+ndjson"
# How soon a client should poll again while the export runs.
RETRY_AFTER_SECONDS = 1
# An export is retried this often (the blob store blipping) before it is reported failed.
MAX_ATTEMPTS = 3
_MISSING = "No bulk export with this id (or it expired or was cancelled)."


class ExportFailed(Problem):
    """The export job failed on every attempt: nothing to download; start a new one."""

    status, slug, title = 500, "fhir-export-failed", "The export failed"


def exporter(principal: Principal) -> Principal:
    """The principal an export runs as: never under break-glass.

    Break-glass is a stated reason for one request; an export runs later, from a stored
    identity, so it gets the principal's ordinary reach (a clinician: their care teams).
    """
    return dataclasses.replace(principal, break_glass_reason=None)


def require_export(principal: Principal, *, level: str, types: tuple[str, ...]) -> None:
    """Refuse a principal that may not export these types at this level (403)."""
    require(principal, Permission.PATIENT_READ)  # the walk is over the patients it reaches
    if DOCUMENT_REFERENCE in types:
        require(principal, Permission.DOCUMENT_READ)
    if level == "system" and not reaches_every_patient(principal):
        problem = Forbidden(
            "A system-level export is for callers that reach every patient (a system/ or * "
            "API token); use GET /fhir/Patient/$export for the patients you reach."
        )
        raise denied(problem, Denial(principal, permission=Permission.PATIENT_READ.value))


def start(
    *,
    session: Session,
    principal: Principal,
    context: AuditContext,
    level: str,
    parameters: ExportParameters,
    request_url: str,
    base: str,
    ttl_seconds: int,
) -> BulkExport:
    """Record the export and enqueue its job in the caller's transaction (the outbox)."""
    principal = exporter(principal)
    require_export(principal, level=level, types=parameters.types)
    now = utcnow()
    export = BulkExport(
        id=uuid.uuid4(),
        level=level,
        principal_kind=principal.kind.value,
        principal_id=principal.subject_id,
        session_id=principal.session_id,
        actor_id=principal.actor_id,
        actor_role=principal.role.value,
        request_id=context.request_id,
        request_url=request_url,
        base_url=base,
        types=",".join(parameters.types),
        since=parameters.since,
        state=ExportState.ACCEPTED,
        created_at=now,
        # Refreshed when the export completes; an export no worker ever ran expires too.
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    session.add(export)
    job = queue.enqueue(
        session,
        kinds.FHIR_BULK_EXPORT,
        {"export_id": str(export.id)},
        dedupe_key=kinds.bulk_export_key(export.id),
        max_attempts=MAX_ATTEMPTS,
    )
    export.job_id = job.id
    audit.record(
        session=session,
        context=context,
        action="fhir.bulk_export.start",
        resource_type="BulkExport",
        resource_id=export.id,
        details={
            "level": level,
            "types": list(parameters.types),
            "since": instant(parameters.since) if parameters.since else None,
        },
    )
    return export


def _owned(
    session: Session, principal: Principal, export_id: uuid.UUID, action: str, *, lock: bool = False
) -> BulkExport:
    """The caller's live export, else 404; someone else's is audited as a denial."""
    export = repository.owned_export(session, principal, export_id, lock=lock)
    gone = (ExportState.CANCELLED.value, ExportState.EXPIRED.value)
    if export is not None and export.state not in gone and export.expires_at > utcnow():
        return export
    if export is None and repository.export_by_id(session, export_id) is not None:
        denial = Denial(
            principal, resource_type="BulkExport", resource_id=export_id, permission=action
        )
        raise denied(NotFound(_MISSING), denial)
    raise NotFound(_MISSING)


@dataclass(frozen=True)
class Status:
    """In progress (``manifest`` None, ``progress`` for X-Progress) or complete."""

    progress: str | None = None
    manifest: dict[str, Any] | None = None


def _manifest(export: BulkExport, files: list[BulkExportFile], base: str) -> dict[str, Any]:
    def entry(file: BulkExportFile) -> dict[str, Any]:
        url = f"{base}/$export-file/{export.id}/{file.name}"
        return {"type": file.resource_type, "url": url, "count": file.count}

    assert export.transaction_time is not None  # set when the job started
    return {
        "transactionTime": instant(export.transaction_time),
        "request": export.request_url,
        "requiresAccessToken": True,
        "output": [entry(f) for f in files if f.role == "output"],
        "error": [entry(f) for f in files if f.role == "error"],
    }


def status(
    *,
    session: Session,
    principal: Principal,
    export_id: uuid.UUID,
    context: AuditContext,
    base: str,
) -> Status:
    """Where the export is; the manifest once it is done (audited: it lists the files)."""
    export = _owned(session, principal, export_id, "fhir.bulk_export.status")
    if export.state in (ExportState.COMPLETE.value, ExportState.FAILED.value):
        files = repository.files_of(session, export.id)
        audit.record(
            session=session,
            context=context,
            action="fhir.bulk_export.manifest",
            resource_type="BulkExport",
            resource_id=export.id,
            details={"state": export.state, "files": len(files)},
        )
        return Status(manifest=_manifest(export, files, base))
    job = session.get(Job, export.job_id) if export.job_id else None
    if job is not None and job.state == JobState.DEAD.value:
        raise ExportFailed("The export failed on every attempt; start a new one.")
    return Status(progress=export.progress or "queued")


def cancel(
    *, session: Session, principal: Principal, export_id: uuid.UUID, context: AuditContext
) -> list[str]:
    """Cancel (or discard) the export; returns blob keys to delete after the commit."""
    export = _owned(session, principal, export_id, "fhir.bulk_export.cancel", lock=True)
    keys = discard(session, export, ExportState.CANCELLED)
    audit.record(
        session=session,
        context=context,
        action="fhir.bulk_export.cancel",
        resource_type="BulkExport",
        resource_id=export.id,
        details={"files": len(keys)},
    )
    return keys


def discard(session: Session, export: BulkExport, state: ExportState) -> list[str]:
    """End an export in ``state``: its job never runs, its file rows go.

    Returns the blob keys to delete after the commit (before it, a rollback would leave
    rows pointing at nothing). A job already running sees the state and stops.
    """
    files = repository.files_of(session, export.id)
    for file in files:
        session.delete(file)
    export.state = state
    export.finished_at = export.finished_at or utcnow()
    export.progress = None
    if export.job_id is not None:
        queue.cancel(session, export.job_id)
    session.flush()
    return [file.storage_key for file in files]


def open_file(
    *,
    session: Session,
    principal: Principal,
    export_id: uuid.UUID,
    name: str,
    context: AuditContext,
) -> BulkExportFile:
    """The file to stream, once its download is audited (the route commits first)."""
    export = _owned(session, principal, export_id, "fhir.bulk_export.download")
    file = repository.file_named(session, export.id, name)
    if file is None:
        raise NotFound("No such file in this export.")
    audit.record(
        session=session,
        context=context,
        action="fhir.bulk_export.download",
        resource_type="BulkExport",
        resource_id=export.id,
        details={"file": file.name, "type": file.resource_type, "count": file.count},
    )
    return file


def delete_blobs(blobs: BlobStore, keys: list[str]) -> None:
    """Delete blobs after their rows are gone; a failure leaves an orphan the sweep removes."""
    storage.discard(blobs, keys, finisher="the bulk-export expiry sweep")


def read_file(runtime: Runtime, file: BulkExportFile) -> Iterator[bytes]:
    """The file's NDJSON, decrypted segment by segment, its SHA-256 checked at the end.

    The first piece is pulled before this returns, so a missing or tampered blob is a
    clean error answer rather than a connection cut after a 200 status line.
    """
    chunks = _guarded(file, iter_plaintext(runtime, file, 0, file.size - 1, verify_hash=True))
    head = next(chunks, b"")

    def body() -> Iterator[bytes]:
        if head:
            yield head
        yield from chunks

    return body()


def _guarded(file: BulkExportFile, chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    except UnknownKekError as exc:
        logger.error("export file %s needs a KEK this instance does not hold", file.id)
        raise KeyUnavailable() from exc
    except (CryptoError, BlobNotFound) as exc:
        logger.error("export file %s failed its integrity check: %s", file.id, exc)
        raise IntegrityFailure() from exc
    except BlobStoreError as exc:
        logger.error("blob store failed while reading export file %s: %s", file.id, exc)
        raise StorageUnavailable(
            "The document store did not answer; try again shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from exc
