"""Each document's ``retain_until``: computed from its class and its patient's dates.

A retention date depends only on the patient's record (birth, death, end of treatment,
last entry) and the document's class, so every document of one class in one record
shares it: a refresh is one UPDATE per class, whatever the record's size.

When it runs:

* a new version moves "last entry" for the whole record: its document and the rest of
  the record get their dates in the upload's own transaction (``on_new_entry``);
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


def on_new_entry(session: Session, schedule: Schedule, document: Document, today: date) -> int:
    """A version is being stored: it is the record's newest entry, so its document and
    every other document of the record get their dates now, in the upload's transaction.

    No query for the last entry (it is ``today``); one for the record's other types,
    then one UPDATE per class, which is a no-op for a first document. Call it with
    autoflush off: the new rows go in at the upload's next flush. Returns how many
    other documents changed.
    """
    patient = session.get(Patient, document.patient_id)
    if patient is None:
        return 0
    dates = RecordDates(
        birth=patient.birth_date,
        last_entry=today,
        treatment_ended=patient.treatment_ended_on,
        death=patient.deceased_on,
    )
    own = schedule.class_for(document.document_type)
    document.retention_class = own.name
    document.retain_until = own.retain_until(dates)
    others = session.scalars(
        select(Document.document_type)
        .where(
            Document.patient_id == patient.id,
            Document.id != document.id,
            Document.destroyed_at.is_(None),
        )
        .distinct()
    )
    return _update_classes(session, schedule, patient.id, dates, set(others), exclude=document.id)


def _update_classes(
    session: Session,
    schedule: Schedule,
    patient_id: uuid.UUID,
    dates: RecordDates,
    types: set[str],
    *,
    exclude: uuid.UUID | None = None,
) -> int:
    """One UPDATE per class among ``types``: only rows whose class or date differ."""
    by_class: dict[str, set[str]] = defaultdict(set)
    for document_type in types:
        by_class[schedule.class_for(document_type).name].add(document_type)
    changed = 0
    for class_name, document_types in by_class.items():
        until = schedule.classes[class_name].retain_until(dates)
        query = (
            update(Document)
            .where(
                Document.patient_id == patient_id,
                Document.destroyed_at.is_(None),
                Document.document_type.in_(sorted(document_types)),
                (Document.retention_class.is_distinct_from(class_name))
                | (Document.retain_until.is_distinct_from(until)),
            )
            .values(retention_class=class_name, retain_until=until)
            .execution_options(synchronize_session=False)
        )
        if exclude is not None:
            query = query.where(Document.id != exclude)
        changed += session.execute(query).rowcount  # type: ignore[attr-defined]
    return changed


def refresh_patient(
    session: Session, schedule: Schedule, patient_id: uuid.UUID, patient: Patient | None = None
) -> int:
    """Recompute the patient's documents' classes and dates; returns how many changed.

    ``patient``: the demographics as the caller is changing them (in the patient
    database's own session, not yet committed); read from there otherwise.
    """
    patient = patient or session.get(Patient, patient_id)
    if patient is None:
        return 0
    types = session.scalars(
        select(Document.document_type)
        .where(Document.patient_id == patient_id, Document.destroyed_at.is_(None))
        .distinct()
    )
    return _update_classes(
        session, schedule, patient_id, record_dates(session, patient), set(types)
    )


def patients_with_documents(
    session: Session, *, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """One page of patients who have documents, in id order (for a full refresh)."""
    query = select(Document.patient_id).distinct().order_by(Document.patient_id).limit(limit)
    if after is not None:
        query = query.where(Document.patient_id > after)
    return list(session.scalars(query))
