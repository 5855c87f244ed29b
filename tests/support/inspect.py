"""Looking behind the API: what is really stored in the databases and the blob store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from medvault.audit.models import AuditEvent
from medvault.documents.models import Document, DocumentVersion
from medvault.patients.models import Patient
from medvault.runtime import Runtime
from medvault.storage.filesystem import TEMP_DIR, FilesystemBlobStore
from medvault.storage.s3 import S3BlobStore


@dataclass(frozen=True)
class StoredState:
    documents: int
    versions: int
    blobs: int
    partial_uploads: int


def stored_state(runtime: Runtime) -> StoredState:
    with runtime.clinical.session() as session:
        documents = session.scalar(select(func.count()).select_from(Document)) or 0
        versions = session.scalar(select(func.count()).select_from(DocumentVersion)) or 0
    blobs = sum(1 for _ in runtime.blobs.list_blobs())
    partial = 0
    store = runtime.blobs
    if isinstance(store, FilesystemBlobStore):
        partial = sum(1 for _ in (store.root / TEMP_DIR).iterdir())
    elif isinstance(store, S3BlobStore):
        uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
        partial = len(uploads.get("Uploads", []))
    return StoredState(documents, versions, blobs, partial)


def audit_actions(runtime: Runtime) -> list[str]:
    with runtime.clinical.session() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def audit_events(runtime: Runtime, action: str, *, outcome: str | None = None) -> list[AuditEvent]:
    """Events of one action; ``outcome`` ("success", "failure"…) narrows them further.

    A refused attempt is recorded under the action it attempted, with outcome
    "failure": count successes alone to ask "did it happen?".
    """
    query = select(AuditEvent).where(AuditEvent.action == action)
    if outcome is not None:
        query = query.where(AuditEvent.outcome == outcome)
    with runtime.clinical.session() as session:
        return list(session.scalars(query.order_by(AuditEvent.id)))


def audit_rows(runtime: Runtime, *actions: str) -> list[AuditEvent]:
    """Every audit event in order, or only those of ``actions``."""
    query = select(AuditEvent).order_by(AuditEvent.id)
    if actions:
        query = query.where(AuditEvent.action.in_(actions))
    with runtime.clinical.session() as session:
        return list(session.scalars(query))


def patient_data(runtime: Runtime) -> set[str]:
    """What would tell who a patient is, or what their documents say, if a URL held it:
    names, identifiers, birth dates and document titles."""
    terms: set[str] = set()
    with runtime.clinical.read_session() as session:
        for patient in session.scalars(select(Patient)):
            terms |= {
                patient.family_name,
                patient.given_name,
                f"{patient.given_name} {patient.family_name}",
                patient.identifier_value,
                patient.birth_date.isoformat(),
            }
        terms |= set(session.scalars(select(Document.title)))
    return terms
