"""Every bulk-export query. Patients and documents start from the access policy's
readable queries, so an export can only ever hold what its principal may read."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medvault.access.policy import PatientScope, readable_documents, readable_patients
from medvault.auth.principal import Principal
from medvault.documents.models import Document, DocumentVersion
from medvault.fhir.bulk.models import BulkExport, BulkExportFile, ExportState
from medvault.patients.models import Patient

# States whose outputs still exist (or will): the ones the expiry job looks at.
LIVE_STATES = (
    ExportState.ACCEPTED.value,
    ExportState.RUNNING.value,
    ExportState.COMPLETE.value,
    ExportState.FAILED.value,
)


def owned_export(
    session: Session, principal: Principal, export_id: uuid.UUID, *, lock: bool = False
) -> BulkExport | None:
    """The export if ``principal`` (same kind and id) started it; anyone else sees none."""
    query = select(BulkExport).where(
        BulkExport.id == export_id,
        BulkExport.principal_kind == principal.kind.value,
        BulkExport.principal_id == principal.subject_id,
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def export_by_id(session: Session, export_id: uuid.UUID) -> BulkExport | None:
    return session.get(BulkExport, export_id)


def files_of(session: Session, export_id: uuid.UUID) -> list[BulkExportFile]:
    return list(
        session.scalars(
            select(BulkExportFile)
            .where(BulkExportFile.export_id == export_id)
            .order_by(BulkExportFile.created_at, BulkExportFile.name)
        )
    )


def file_named(session: Session, export_id: uuid.UUID, name: str) -> BulkExportFile | None:
    return session.scalars(
        select(BulkExportFile).where(
            BulkExportFile.export_id == export_id, BulkExportFile.name == name
        )
    ).first()


def count_patients(session: Session, scope: PatientScope) -> int:
    counted = select(func.count()).select_from(readable_patients(scope).subquery())
    # A count of a subquery names no model: say which database it goes to.
    return int(session.scalar(counted, bind_arguments={"mapper": Patient}) or 0)


def patient_batch(
    session: Session, scope: PatientScope, *, after: uuid.UUID | None, limit: int
) -> list[Patient]:
    """The next ``limit`` readable patients in id order (a keyset walk: no row twice)."""
    query = readable_patients(scope)
    if after is not None:
        query = query.where(Patient.id > after)
    return list(session.scalars(query.order_by(Patient.id).limit(limit)))


def document_versions(
    session: Session,
    principal: Principal,
    patient_ids: Sequence[uuid.UUID],
    *,
    since: datetime | None,
    until: datetime,
    chunk: int,
) -> Iterator[list[tuple[Document, DocumentVersion]]]:
    """Every version of the readable documents of these patients, changed in (since, until].

    One DocumentReference per version, as a search returns them; streamed in chunks so a
    patient with thousands of versions is never held at once.
    """
    query = (
        readable_documents(principal)
        .add_columns(DocumentVersion)
        .join(DocumentVersion, DocumentVersion.document_id == Document.id)
        .where(Document.patient_id.in_(sorted(patient_ids)), Document.updated_at <= until)
        .order_by(Document.patient_id, DocumentVersion.id)
    )
    if since is not None:
        query = query.where(Document.updated_at > since)
    result = session.execute(query.execution_options(yield_per=chunk))
    for part in result.partitions():
        yield [(row[0], row[1]) for row in part]


def expired_exports(session: Session, now: datetime, limit: int) -> list[BulkExport]:
    return list(
        session.scalars(
            select(BulkExport)
            .where(BulkExport.state.in_(LIVE_STATES), BulkExport.expires_at <= now)
            .order_by(BulkExport.expires_at, BulkExport.id)
            .limit(limit)
        )
    )


def is_export_blob(session: Session, key: str) -> bool:
    """Whether a file row points at ``key`` (the expiry sweep keeps those)."""
    found = session.scalar(select(BulkExportFile.id).where(BulkExportFile.storage_key == key))
    return found is not None
