"""Removing uploads that expired, and staged chunks nothing points to (the reconciler's).

An unfinished upload expires ``MEDVAULT_UPLOAD_EXPIRY_SECONDS`` after its last request
(every PATCH moves the deadline); a finished one is kept as long after completing, so
that a client that lost the final answer can still ask HEAD. Then its chunks, any
write to its folder that never finished (an S3 multipart upload a crashed request left
open) and its row go, and the removal of an unfinished one is audited.

A chunk blob that no row lists (a request died between sealing it and recording it)
is removed once older than the reconciler's grace period: a request records its chunk
within seconds of sealing it, and a chunk is only ever sealed by a request that holds
the upload's lease.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime
from medvault.uploads import repository
from medvault.uploads.models import UploadStatus
from medvault.uploads.staging import UPLOAD_BLOB_PREFIX, upload_prefix

logger = logging.getLogger(__name__)

BATCH = 100


@dataclass
class ExpiryReport:
    expired_uploads: int = 0
    finished_forgotten: int = 0
    removed_blobs: int = 0
    removed_bytes: int = 0
    incomplete_writes: int = 0


def expire_uploads(
    runtime: Runtime, *, grace_seconds: float, dry_run: bool = False
) -> ExpiryReport:
    report = ExpiryReport()
    now = utcnow()
    while True:
        with runtime.clinical.read_session() as session:
            due = [
                (u.id, u.status, u.patient_id, u.offset, u.lock_expires_at)
                for u in repository.expired(session, now, limit=BATCH)
            ]
        due = [row for row in due if row[4] is None or row[4] < now]  # not while held
        if not due:
            break
        for upload_id, status, patient_id, offset, _ in due:
            if dry_run:
                _count(report, status)
                continue
            _remove_upload(runtime, report, upload_id, status, patient_id, offset)
        if dry_run or len(due) < BATCH:
            break
    _remove_unlisted(runtime, report, now=now, grace_seconds=grace_seconds, dry_run=dry_run)
    return report


def _count(report: ExpiryReport, status: str) -> None:
    if status == UploadStatus.RECEIVING.value:
        report.expired_uploads += 1
    else:
        report.finished_forgotten += 1


def _remove_upload(
    runtime: Runtime,
    report: ExpiryReport,
    upload_id: uuid.UUID,
    status: str,
    patient_id: uuid.UUID,
    offset: int,
) -> None:
    prefix = upload_prefix(upload_id)
    for blob in list(runtime.blobs.list_blobs(prefix)):
        runtime.blobs.delete(blob.key)
        report.removed_blobs += 1
        report.removed_bytes += blob.size
    report.incomplete_writes += runtime.blobs.sweep_incomplete(older_than_seconds=0, prefix=prefix)
    with runtime.clinical.session() as session:
        upload = repository.get(session, upload_id)
        if upload is None:
            return
        session.delete(upload)
        if status == UploadStatus.RECEIVING.value:
            audit.record(
                session=session,
                context=AuditContext.system("reconciler"),
                action="upload.expire",
                resource_type="Upload",
                resource_id=upload_id,
                patient_id=patient_id,
                details={"offset": offset},
            )
        session.commit()
    _count(report, status)


def _remove_unlisted(
    runtime: Runtime, report: ExpiryReport, *, now: datetime, grace_seconds: float, dry_run: bool
) -> None:
    """Chunk blobs no row lists, once older than the grace period."""
    listed: dict[uuid.UUID, set[str] | None] = {}
    for blob in runtime.blobs.list_blobs(UPLOAD_BLOB_PREFIX):
        if (now - blob.modified).total_seconds() < grace_seconds:
            continue
        try:
            upload_id = uuid.UUID(blob.key[len(UPLOAD_BLOB_PREFIX) :].split("/", 1)[0])
        except ValueError:
            upload_id = None
        if upload_id is not None and upload_id not in listed:
            with runtime.clinical.read_session() as session:
                exists = repository.get(session, upload_id) is not None
                listed[upload_id] = repository.chunk_keys(session, upload_id) if exists else None
        keys = listed.get(upload_id) if upload_id is not None else None
        if keys is not None and blob.key in keys:
            continue
        if not dry_run:
            runtime.blobs.delete(blob.key)
        report.removed_blobs += 1
        report.removed_bytes += blob.size
