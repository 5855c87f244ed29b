"""Each document's ``retain_until``: computed from its class and its patient's dates.

A retention date depends only on the patient's record (birth, death, end of treatment,
last entry) and the document's class, so every document of one class in one record
shares it: a refresh is one UPDATE per class, whatever the record's size.

When it runs:

* a new version arms a refresh job for its patient (``documents.arrival``): the new
  entry moves "last entry" for the whole record; the new document's own date is set
  at once, in the upload's transaction;
* changing a patient's date of death or end of treatment refreshes in that transaction;
* the appraisal job refreshes every record before it lists anything, so a stale date
  (a retention file changed, a job not yet run) can never put a record up for
  destruction early.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from medvault.documents.models import Document, DocumentVersion
from medvault.governance.schedule import RecordDates, Schedule
from medvault.patients.models import Patient


def record_dates(session: Session, patient: Patient, *, newest: date | None = None) -> RecordDates:
    """The dates a rule may use; ``newest``: an entry this transaction is adding."""
    last = session.scalar(
        select(func.max(DocumentVersion.created_at))
        .join(Document, Document.id == DocumentVersion.document_id)
        .where(Document.patient_id == patient.id, Document.destroyed_at.is_(None))
    )
    entries = [day for day in (last.date() if last else None, newest) if day is not None]
    return RecordDates(
        birth=patient.birth_date,
        # A record with no entry yet: its creation is as far as the vault knows.
        last_entry=max(entries) if entries else patient.created_at.date(),
        treatment_ended=patient.treatment_ended_on,
        death=patient.deceased_on,
    )


def assign_new(session: Session, schedule: Schedule, document: Document, today: date) -> None:
    """Set a document's class and date as it is stored (it is the record's newest entry)."""
    patient = session.get(Patient, document.patient_id)
    if patient is None:
        return
    retention_class = schedule.class_for(document.document_type)
    document.retention_class = retention_class.name
    document.retain_until = retention_class.retain_until(
        record_dates(session, patient, newest=today)
    )


def refresh_patient(session: Session, schedule: Schedule, patient_id: uuid.UUID) -> int:
    """Recompute the patient's documents' classes and dates; returns how many changed."""
    patient = session.get(Patient, patient_id)
    if patient is None:
        return 0
    dates = record_dates(session, patient)
    by_class: dict[str, set[str]] = defaultdict(set)
    types = session.scalars(
        select(Document.document_type)
        .where(Document.patient_id == patient_id, Document.destroyed_at.is_(None))
        .distinct()
    )
    for document_type in types:
        by_class[schedule.class_for(document_type).name].add(document_type)
    changed = 0
    for class_name, document_types in by_class.items():
        until = schedule.classes[class_name].retain_until(dates)
        result = session.execute(
            update(Document)
            .where(
                Document.patient_id == patient_id,
                Document.destroyed_at.is_(None),
                Document.document_type.in_(sorted(document_types)),
                # Only rows that differ: an unchanged record writes nothing.
                (Document.retention_class.is_distinct_from(class_name))
                | (Document.retain_until.is_distinct_from(until)),
            )
            .values(retention_class=class_name, retain_until=until)
            .execution_options(synchronize_session=False)
        )
        changed += result.rowcount  # type: ignore[attr-defined]
    return changed


def patients_with_documents(
    session: Session, *, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """One page of patients who have documents, in id order (for a full refresh)."""
    query = select(Document.patient_id).distinct().order_by(Document.patient_id).limit(limit)
    if after is not None:
        query = query.where(Document.patient_id > after)
    return list(session.scalars(query))
