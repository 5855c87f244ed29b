"""Document use cases: metadata, listing, versions, soft delete and restore.

Functions flush and never commit; the route commits once, after the audit event
has been added to the same session.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from medvault.access.authorship import may_change, require_change
from medvault.access.denials import Denial, audited_attempt, denied, failed_attempt
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import repository
from medvault.documents.filenames import served_filename
from medvault.documents.models import DeriveState, Document, DocumentStatus, DocumentVersion
from medvault.documents.ordering import SORTS, DocumentSort
from medvault.documents.repository import ListFilters
from medvault.documents.schemas import (
    DerivedOut,
    DocumentOut,
    DocumentPage,
    ScanOut,
    VersionList,
    VersionOut,
)
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.keyset import SortCursor
from medvault.kit.problems import Conflict, Destroyed, Gone, NotFound, Problem


def to_out(document: Document, version: DocumentVersion) -> DocumentOut:
    return DocumentOut(
        id=document.id,
        patient_id=document.patient_id,
        version=version.version,
        filename=served_filename(version.filename, version.content_type),
        original_filename=version.original_filename,
        content_type=version.content_type,
        size=version.size,
        sha256=version.sha256,
        document_type=document.document_type,
        title=document.title,
        description=document.description,
        classification=document.classification,
        status=document.status,
        created_at=document.created_at,
        updated_at=document.updated_at,
        uploaded_by=version.created_by,
        scan=scan_of(version),
        active_content=active_content_of(version),
        derived=derived_of(version),
        deleted_at=document.deleted_at,
        deleted_by=document.deleted_by,
        delete_reason=document.delete_reason,
        retention_class=document.retention_class,
        retain_until=document.retain_until,
        destroyed_at=document.destroyed_at,
    )


def version_to_out(version: DocumentVersion) -> VersionOut:
    return VersionOut(
        version=version.version,
        filename=served_filename(version.filename, version.content_type),
        original_filename=version.original_filename,
        content_type=version.content_type,
        size=version.size,
        sha256=version.sha256,
        state=version.state,
        created_at=version.created_at,
        uploaded_by=version.created_by,
        scan=scan_of(version),
        active_content=active_content_of(version),
        derived=derived_of(version),
    )


def scan_of(version: DocumentVersion) -> ScanOut:
    return ScanOut(
        state=version.scan_state,
        engine=version.scan_engine,
        signature=version.scan_signature,
        scanned_at=version.scanned_at,
    )


def derived_of(version: DocumentVersion) -> DerivedOut:
    return DerivedOut(
        preview=DeriveState(version.preview_state),
        preview_reason=version.preview_note,
        text=DeriveState(version.text_state),
        text_reason=version.text_note,
        text_source=version.text_source,
    )


def active_content_of(version: DocumentVersion) -> list[str] | None:
    """The column's comma-separated kinds as a list: "" (a PDF without any) is []."""
    if version.active_content is None:
        return None
    return [kind for kind in version.active_content.split(",") if kind]


def readable_or_404(
    session: Session,
    principal: Principal,
    document_id: uuid.UUID,
    *,
    missing: str = N_("No document with this id."),
) -> tuple[Document, DocumentVersion]:
    """The document and its current version, or the same 404 for "absent" and "not yours".

    The one reach check behind every use case on a single document, whichever face
    asks (REST, portal, FHIR: ``missing`` words the 404 in the face's own terms).
    """
    found = repository.readable(session, principal, document_id)
    if found is None:
        # Same answer for "absent" and "not yours", so existence never leaks. Both are
        # audited alike (one access.denied event, its patient empty when there is no
        # record): were only the real record's refusal committed, its answer would come
        # measurably later, and timing would leak what the 404 hides.
        problem = NotFound(missing)
        patient_id = repository.patient_of(session, document_id)
        raise denied(problem, Denial(principal, "Document", document_id, patient_id))
    return found


def _attempt(principal: Principal, document: Document, action: str) -> Denial:
    """How a refusal on a document the caller reaches is audited (``access.denials``)."""
    return failed_attempt(
        principal,
        action,
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
    )


def get(
    *, session: Session, principal: Principal, document_id: uuid.UUID, context: AuditContext
) -> DocumentOut:
    document, version = readable_or_404(session, principal, document_id)
    audit.record(
        session=session,
        context=context,
        action="document.read",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
    )
    return to_out(document, version)


@dataclass(frozen=True)
class Authorship:
    """Who created a document, and whether the caller may change it (add a version)."""

    created_by: str
    created_at: datetime
    may_change: bool


def authorship(*, session: Session, principal: Principal, document_id: uuid.UUID) -> Authorship:
    """The creator of a document the caller reads, and the authorship rule's answer for it.

    For pages that offer "Upload a new version" only where the upload would be accepted:
    the same rule (``access.authorship``) refuses it anyway if it is sent.
    """
    document, _ = readable_or_404(session, principal, document_id)
    return Authorship(
        created_by=document.created_by,
        created_at=document.created_at,
        may_change=may_change(principal, document),
    )


def list_page(
    *,
    session: Session,
    principal: Principal,
    filters: ListFilters,
    cursor: str | None,
    limit: int,
    context: AuditContext,
    order: DocumentSort = DocumentSort.NEWEST,
) -> DocumentPage:
    spec = SORTS[order]
    rows = repository.page(
        session,
        principal,
        filters=filters,
        cursor=SortCursor.decode(cursor, sort=order.value, kind=spec.kind) if cursor else None,
        limit=limit + 1,
        order=order,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    audit.record(
        session=session,
        context=context,
        action="document.list",
        resource_type="Document",
        patient_id=filters.patient_id,
        # A search is audited by search.service (the same action, never its words).
        details={
            "results": len(rows),
            "document_type": filters.document_type,
            "searched": False,
            "sort": order.value,
        },
    )
    next_cursor = None
    if more:
        document, version = rows[-1]
        next_cursor = SortCursor(order.value, spec.value_of(document, version), document.id)
    return DocumentPage(
        items=[to_out(doc, ver) for doc, ver in rows],
        next_cursor=next_cursor.encode() if next_cursor else None,
    )


def list_versions(
    *, session: Session, principal: Principal, document_id: uuid.UUID, context: AuditContext
) -> VersionList:
    document, _ = readable_or_404(session, principal, document_id)
    audit.record(
        session=session,
        context=context,
        action="document.versions.read",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
    )
    return VersionList(items=[version_to_out(v) for v in repository.versions(session, document.id)])


def resolve_version(
    *,
    session: Session,
    principal: Principal,
    document_id: uuid.UUID,
    number: int | None,
    attempt: str = "document.content.read",
) -> tuple[Document, DocumentVersion]:
    """The document and the requested (or current) version, if readable and not deleted.

    ``attempt`` names what the caller was about to do, for the audit event of a refusal
    past the reach check (a deleted document, an absent version): the caller reaches
    the document, so those answers leak nothing, and the audit log still records them.
    """
    document, current = readable_or_404(session, principal, document_id)
    with audited_attempt(_attempt(principal, document, attempt)):
        if document.destroyed_at is not None:
            raise Destroyed(N_("It was destroyed at the end of its retention period."))
        if document.status == DocumentStatus.DELETED:
            raise Gone(N_("This document was deleted; an administrator can restore it."))
        if number is None or number == current.version:
            return document, current
        version = repository.version(session, document.id, number)
        if version is None:
            raise NotFound(N_("This document has no such version."))
        return document, version


def soft_delete(
    *,
    session: Session,
    principal: Principal,
    document_id: uuid.UUID,
    reason: str,
    context: AuditContext,
) -> DocumentOut:
    document, version = readable_or_404(session, principal, document_id)
    # Only a patient-bound app token with a delete scope gets here as a patient: it
    # may remove the patient's own uploads, never a clinician's record.
    require_change(principal, document)
    if document.status == DocumentStatus.DELETED:
        problem = Conflict(N_("The document is already deleted."))
        raise denied(problem, _attempt(principal, document, "document.delete"))
    now: datetime = utcnow()
    document.status = DocumentStatus.DELETED
    document.deleted_at = now
    document.deleted_by = context.actor_id
    document.delete_reason = reason
    document.updated_at = now
    session.flush()
    audit.record(
        session=session,
        context=context,
        action="document.delete",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={"reason": reason},
    )
    return to_out(document, version)


def restore(
    *, session: Session, principal: Principal, document_id: uuid.UUID, context: AuditContext
) -> DocumentOut:
    document, version = readable_or_404(session, principal, document_id)
    require_change(principal, document)
    if document.destroyed_at is not None:
        problem: Problem = Destroyed(N_("It was destroyed at the end of its retention period."))
        raise denied(problem, _attempt(principal, document, "document.restore"))
    if document.status != DocumentStatus.DELETED:
        problem = Conflict(N_("The document is not deleted."))
        raise denied(problem, _attempt(principal, document, "document.restore"))
    document.status = DocumentStatus.CURRENT
    document.deleted_at = None
    document.deleted_by = None
    document.delete_reason = None
    document.updated_at = utcnow()
    session.flush()
    audit.record(
        session=session,
        context=context,
        action="document.restore",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
    )
    return to_out(document, version)
