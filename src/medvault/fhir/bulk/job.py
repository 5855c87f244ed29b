"""The export job: walk the patients the principal reaches, write encrypted NDJSON.

Order, and why:

1. The principal is resolved again from its stored identity (``identity``) and must
   still be allowed the export; otherwise the export fails with an error file that
   says so, and nothing is read.
2. ``transactionTime`` is fixed before the first row is read; only resources last
   updated up to it (and after ``_since``) are written, so a client's next
   ``_since=transactionTime`` misses nothing and repeats nothing.
3. Patients are walked in id order in batches, through ``readable_patients``; each
   batch's DocumentReferences come from ``readable_documents``. Every patient whose
   data went into a file gets one ``fhir.bulk_export.include`` event, committed with
   its batch, before the files can exist for anyone (fail closed: no audit, no data).
4. The files are made durable, then recorded in one transaction that also completes
   the export. A crash before that commit leaves blobs no row names: the expiry sweep
   removes them after the reconciler's grace period. A cancel or expiry meanwhile
   wins: the job sees it and deletes what it wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.policy import (
    Permission,
    allows,
    reaches_every_patient,
    resolve_patient_scope,
)
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents.models import Document, DocumentVersion
from medvault.fhir import repository as fhir_repository
from medvault.fhir.bulk import identity, repository
from medvault.fhir.bulk.models import BulkExport, BulkExportFile, ExportState
from medvault.fhir.bulk.ndjson import EncryptedNdjsonWriter, SealedFile
from medvault.fhir.bulk.parameters import DOCUMENT_REFERENCE, PATIENT
from medvault.fhir.bulk.service import delete_blobs
from medvault.fhir.mapping import document_reference as document_mapping
from medvault.fhir.mapping import patient as patient_mapping
from medvault.fhir.wire.outcome import issue, outcome
from medvault.kit.clock import utcnow
from medvault.patients.models import Patient
from medvault.processing.worker import JobInterrupted
from medvault.runtime import Runtime

PATIENT_BATCH = 100
DOCUMENT_CHUNK = 500
ERROR_FILE = "OperationOutcome.ndjson"


def file_name(resource_type: str) -> str:
    return f"{resource_type}.ndjson"


def run_export(
    runtime: Runtime, export_id: uuid.UUID, stopping: Callable[[], bool]
) -> dict[str, Any]:
    """Run one export to completion (or failure); idempotent per attempt."""
    with runtime.clinical.session() as session:
        export = repository.export_by_id(session, export_id)
        if export is None or export.state not in (ExportState.ACCEPTED, ExportState.RUNNING):
            return {"outcome": export.state if export else "missing"}
        with runtime.auth.read_session() as auth_session:
            principal = identity.resolve(
                auth_session,
                kind=export.principal_kind,
                principal_id=export.principal_id,
                session_id=export.session_id,
            )
        refusal = _refusal(principal, export)
        if refusal is not None or principal is None:
            return _fail(runtime, session, export, refusal or "")
        export.state = ExportState.RUNNING
        export.transaction_time = utcnow()
        total = repository.count_patients(session, resolve_patient_scope(session, principal))
        export.progress = f"0 of {total} patients"
        session.commit()
    return _export(runtime, export_id, principal, total, stopping)


def _refusal(principal: Principal | None, export: BulkExport) -> str | None:
    """Why the principal may no longer run this export, or None."""
    if principal is None:
        return (
            "The token or login that started this export is no longer valid (revoked, "
            "expired, disabled or logged out): nothing was exported."
        )
    types = export.types.split(",")
    allowed = allows(principal, Permission.PATIENT_READ) and (
        DOCUMENT_REFERENCE not in types or allows(principal, Permission.DOCUMENT_READ)
    )
    if not allowed or (export.level == "system" and not reaches_every_patient(principal)):
        return "The caller that started this export may no longer run it: nothing was exported."
    return None


def _context(export: BulkExport) -> AuditContext:
    # The events name the requester: the job reads on their behalf, at their request.
    return AuditContext(
        actor_id=export.actor_id,
        actor_role=export.actor_role,
        client_ip=None,
        user_agent=None,
        request_id=export.request_id,
    )


def _export(
    runtime: Runtime,
    export_id: uuid.UUID,
    principal: Principal,
    total: int,
    stopping: Callable[[], bool],
) -> dict[str, Any]:
    with runtime.clinical.read_session() as session:
        export = repository.export_by_id(session, export_id)
        assert export is not None and export.transaction_time is not None
        types, since, until = export.types.split(","), export.since, export.transaction_time
        base, context = export.base_url, _context(export)
    writers = {
        kind: EncryptedNdjsonWriter(runtime, export_id=export_id, resource_type=kind)
        for kind in types
    }
    sealed: list[SealedFile] = []
    try:
        after: uuid.UUID | None = None
        done = 0
        while True:
            with runtime.clinical.session() as session:
                # The scope again for each batch: a care team changed meanwhile counts.
                scope = resolve_patient_scope(session, principal)
                patients = repository.patient_batch(
                    session, scope, after=after, limit=PATIENT_BATCH
                )
                if not patients:
                    break
                counts = _write_batch(session, principal, patients, writers, since, until, base)
                _record_includes(session, context, export_id, counts)
                done += len(patients)
                after = patients[-1].id
                current = repository.export_by_id(session, export_id)
                if current is None or current.state != ExportState.RUNNING:
                    session.rollback()  # cancelled or expired meanwhile: it wins
                    for writer in writers.values():
                        writer.abort()
                    return {"outcome": current.state if current else "missing"}
                current.progress = f"{done} of {max(total, done)} patients"
                session.commit()
            if stopping():
                raise JobInterrupted()
        for writer in writers.values():
            if writer.count:
                sealed.append(writer.commit())
            else:
                writer.abort()
        return _complete(runtime, export_id, sealed, patients=done)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        delete_blobs(runtime.blobs, [file.storage_key for file in sealed])
        raise


def _write_batch(
    session: Session,
    principal: Principal,
    patients: list[Patient],
    writers: dict[str, EncryptedNdjsonWriter],
    since: datetime | None,
    until: datetime,
    base: str,
) -> dict[uuid.UUID, dict[str, int]]:
    """Write one batch of patients' resources; returns what went in, per patient."""
    counts: dict[uuid.UUID, dict[str, int]] = {}
    if PATIENT in writers:
        for patient in patients:
            # A registry row never changes: its lastUpdated is when it was registered.
            if patient.created_at <= until and (since is None or patient.created_at > since):
                writers[PATIENT].write(patient_mapping.to_resource(patient))
                counts.setdefault(patient.id, {})[PATIENT] = 1
    if DOCUMENT_REFERENCE in writers:
        chunks = repository.document_versions(
            session,
            principal,
            [patient.id for patient in patients],
            since=since,
            until=until,
            chunk=DOCUMENT_CHUNK,
        )
        for chunk in chunks:
            _write_documents(session, chunk, writers[DOCUMENT_REFERENCE], base, counts)
    return counts


def _write_documents(
    session: Session,
    chunk: list[tuple[Document, DocumentVersion]],
    writer: EncryptedNdjsonWriter,
    base: str,
    counts: dict[uuid.UUID, dict[str, int]],
) -> None:
    # Exactly what a read or search returns: the same mapping, drafts marked the same way.
    drafts = fhir_repository.drafts(
        session, [doc.id for doc, ver in chunk if ver.version == doc.current_version]
    )
    for document, version in chunk:
        draft = document.id in drafts and version.version == document.current_version
        writer.write(document_mapping.to_resource(document, version, base=base, draft=draft))
        mine = counts.setdefault(document.patient_id, {})
        mine[DOCUMENT_REFERENCE] = mine.get(DOCUMENT_REFERENCE, 0) + 1


def _record_includes(
    session: Session,
    context: AuditContext,
    export_id: uuid.UUID,
    counts: dict[uuid.UUID, dict[str, int]],
) -> None:
    """One event per patient whose data went into the export, added as one batch."""
    events = [
        audit.build(
            context=context,
            action="fhir.bulk_export.include",
            resource_type="BulkExport",
            resource_id=export_id,
            patient_id=patient_id,
            details={"resources": dict(sorted(per_type.items()))},
        )
        for patient_id, per_type in sorted(counts.items())
    ]
    session.add_all(events)


def _complete(
    runtime: Runtime, export_id: uuid.UUID, sealed: list[SealedFile], *, patients: int
) -> dict[str, Any]:
    with runtime.clinical.session() as session:
        export = repository.export_by_id(session, export_id)
        if export is None or export.state != ExportState.RUNNING:
            session.rollback()
            delete_blobs(runtime.blobs, [file.storage_key for file in sealed])
            return {"outcome": export.state if export else "missing"}
        now = utcnow()
        for file in sealed:
            _add_file(session, export_id, file, role="output", name=file_name(file.resource_type))
        export.state = ExportState.COMPLETE
        export.finished_at = now
        export.expires_at = now + timedelta(seconds=runtime.settings.bulk_export_ttl_seconds)
        export.progress = None
        session.commit()
    return {
        "outcome": "complete",
        "patients": patients,
        "files": {file.resource_type: file.count for file in sealed},
    }


def _add_file(
    session: Session, export_id: uuid.UUID, file: SealedFile, *, role: str, name: str
) -> None:
    session.add(
        BulkExportFile(
            id=file.id,
            export_id=export_id,
            role=role,
            resource_type=file.resource_type,
            name=name,
            count=file.count,
            size=file.size,
            sha256=file.sha256,
            storage_key=file.storage_key,
            kek_id=file.kek_id,
            wrapped_dek=file.wrapped_dek,
            created_at=utcnow(),
        )
    )


def _fail(runtime: Runtime, session: Session, export: BulkExport, reason: str) -> dict[str, Any]:
    """End the export with one OperationOutcome in its error file, and nothing else."""
    writer = EncryptedNdjsonWriter(runtime, export_id=export.id, resource_type="OperationOutcome")
    writer.write(outcome(issue("fatal", "forbidden", reason)))
    file = writer.commit()
    try:
        now = utcnow()
        _add_file(session, export.id, file, role="error", name=ERROR_FILE)
        export.state = ExportState.FAILED
        export.transaction_time = export.transaction_time or now
        export.finished_at = now
        export.expires_at = now + timedelta(seconds=runtime.settings.bulk_export_ttl_seconds)
        export.progress = None
        audit.record(
            session=session,
            context=_context(export),
            action="fhir.bulk_export.fail",
            outcome=audit.Outcome.FAILURE,
            resource_type="BulkExport",
            resource_id=export.id,
            details={"reason": "principal"},
        )
        session.commit()
    except BaseException:
        delete_blobs(runtime.blobs, [file.storage_key])
        raise
    return {"outcome": "failed"}
