"""DocumentReference use cases: read, update, delete, and describing a Binary.

Like every service, these add audit events to the caller's session and flush; the
route commits once, before anything is returned. Reads write the same audit events
as the REST API (``document.read``, ``document.list``), and a document outside the
caller's reach is "not found", exactly like one that does not exist.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.authorship import require_change
from medvault.access.denials import Denial, audited_attempt, failed_attempt
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import repository as documents
from medvault.documents import service as document_service
from medvault.documents.models import Document, DocumentStatus, DocumentVersion
from medvault.fhir import repository
from medvault.fhir.mapping import document_reference as mapping
from medvault.fhir.mapping.codes import version_token
from medvault.fhir.wire.outcome import (
    NotSupported,
    PreconditionFailed,
    PreconditionRequired,
    UnknownReference,
    UnprocessableResource,
)
from medvault.fhir.wire.primitives import parse_etag
from medvault.fhir.wire.references import (
    DocumentId,
    document_id_or_404,
    parse_uuid,
    split_reference,
)
from medvault.kit.clock import utcnow
from medvault.kit.problems import Conflict, NotFound
from medvault.runtime import Runtime
from medvault.search import index as search_index

# The one reach check (``documents.service.readable_or_404``), worded for FHIR.
_MISSING = "No DocumentReference with this id."


def _version_of(
    session: Session, principal: Principal, ref: DocumentId
) -> tuple[Document, DocumentVersion]:
    document, current = document_service.readable_or_404(
        session, principal, ref.document_id, missing=_MISSING
    )
    if ref.version is None:
        return document, current
    version = documents.version(session, document.id, ref.version)
    if version is None or version.version >= document.current_version:
        raise NotFound("No DocumentReference with this id.")
    return document, version


def resource(
    session: Session, document: Document, version: DocumentVersion, base: str
) -> dict[str, Any]:
    draft = version.version == document.current_version and bool(
        repository.drafts(session, [document.id])
    )
    return mapping.to_resource(document, version, base=base, draft=draft)


def read(
    *, session: Session, principal: Principal, raw_id: str, context: AuditContext, base: str
) -> dict[str, Any]:
    ref = document_id_or_404(raw_id)
    document, version = _version_of(session, principal, ref)
    audit.record(
        session=session,
        context=context,
        action="document.read",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={"version": version.version} if ref.version is not None else None,
    )
    return resource(session, document, version, base)


# -- changes ---------------------------------------------------------------------------


def _attempt(principal: Principal, document: Document, action: str) -> Denial:
    """How a refused change to a reachable document is audited (see ``access.denials``)."""
    return failed_attempt(
        principal,
        action,
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
    )


def _lock(session: Session, document: Document) -> None:
    """Row-lock the document for this transaction and reload it.

    A check-then-write (If-Match, "is it still a draft?") is only sound if nobody can
    change the row in between: PostgreSQL serialises here, SQLite's write transaction
    (BEGIN IMMEDIATE) already does.
    """
    documents.lock_current_version(session, document.id)
    session.refresh(document)


def _check_match(document: Document, if_match: str | None, *, required: bool) -> None:
    current = version_token(document.updated_at)
    if if_match is None:
        if required:
            raise PreconditionRequired(
                'Send If-Match with the ETag (W/"versionId") of the version you edited, so '
                "a concurrent change is never overwritten.",
                headers={"ETag": f'W/"{current}"'},
            )
        return
    if parse_etag(if_match) != current:
        raise PreconditionFailed(
            "The DocumentReference changed since that version; read it again and reapply "
            "your change.",
            headers={"ETag": f'W/"{current}"'},
        )


def _touch(document: Document) -> None:
    # Strictly later than before, so meta.versionId (derived from it) always changes.
    previous: datetime = document.updated_at
    document.updated_at = max(utcnow(), previous + timedelta(microseconds=1))


def _check_attachment(
    given: mapping.AttachmentInput, version: DocumentVersion, *, base: str, where: str
) -> None:
    """What a client says about existing content must be true of it."""
    at = f"{where}.content[0].attachment"
    if given.data is not None:
        raise NotSupported(
            "Content cannot be replaced by an update: POST a Binary with "
            "X-Security-Context: DocumentReference/{id} to add a version.",
            expression=[f"{at}.data"],
        )
    target = split_reference(given.url or "", base)
    if target is None or target[0] != "Binary" or parse_uuid(target[1]) != version.id:
        raise UnprocessableResource(
            f"attachment.url must be this version's Binary ({base}/Binary/{version.id}).",
            expression=[f"{at}.url"],
        )
    check_declared(given, version, where=where)


def check_declared(given: mapping.AttachmentInput, version: DocumentVersion, *, where: str) -> None:
    """Declared contentType, size and hash must match the stored (sniffed, hashed) bytes."""
    at = f"{where}.content[0].attachment"
    if (
        given.content_type is not None
        and given.content_type != "application/octet-stream"
        and given.content_type != version.content_type
    ):
        raise UnprocessableResource(
            f"attachment.contentType does not match the bytes, which are {version.content_type}.",
            expression=[f"{at}.contentType"],
        )
    if given.size is not None and given.size != version.size:
        raise UnprocessableResource(
            f"attachment.size does not match the data, which has {version.size} bytes.",
            expression=[f"{at}.size"],
        )
    if given.sha1_hex is not None and version.sha1 is not None and given.sha1_hex != version.sha1:
        raise UnprocessableResource(
            "attachment.hash is not the SHA-1 of the data.", expression=[f"{at}.hash"]
        )


def _apply(document: Document, given: mapping.DocumentInput) -> list[str]:
    """Copy the metadata onto the document; the names of the fields that changed.

    An absent title or confidentiality label leaves the stored one: the vault always
    has a title, and a dropped label must never downgrade a restricted document. An
    absent description is removed, as a FHIR update replaces the resource.
    """
    changed = []
    updates: dict[str, Any] = {
        "document_type": given.document_type,
        "description": given.description,
    }
    if given.classification is not None:
        updates["classification"] = given.classification.value
    if given.title is not None:
        updates["title"] = given.title
    for name, value in updates.items():
        if getattr(document, name) != value:
            setattr(document, name, value)
            changed.append(name)
    return changed


def _record_update(
    session: Session, context: AuditContext, document: Document, changed: list[str], **extra: Any
) -> None:
    # Field names only: titles and descriptions may hold a patient's name.
    audit.record(
        session=session,
        context=context,
        action="document.update",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={"fields": changed, **extra},
    )


def update(
    *,
    session: Session,
    runtime: Runtime,
    principal: Principal,
    raw_id: str,
    body: dict[str, Any],
    if_match: str | None,
    context: AuditContext,
    base: str,
) -> dict[str, Any]:
    """Change a document's metadata (type, title, description, confidentiality).

    Requires If-Match: FHIR's version-aware update, so two editors never overwrite
    each other. Content, subject and status cannot change here.
    """
    ref = document_id_or_404(raw_id)
    document, version = _version_of(session, principal, ref)
    # The one authorship rule (access.authorship): patients change only their own uploads.
    require_change(principal, document)
    # From here the record is known and reachable: every refusal is an audited attempt.
    with audited_attempt(_attempt(principal, document, "document.update")):
        if body.get("id") != raw_id:
            raise UnprocessableResource(
                "The resource's id must be the id in the URL.",
                expression=["DocumentReference.id"],
            )
        if ref.version is not None:
            raise NotSupported(
                "Superseded versions cannot be changed; update the document's current "
                f"DocumentReference ({document.id}).",
            )
        _lock(session, document)
        _check_match(document, if_match, required=True)
        given = mapping.from_resource(body, base=base, update=True)
        if given.patient_id != document.patient_id:
            raise UnprocessableResource(
                "A document cannot move to another patient.",
                expression=["DocumentReference.subject"],
            )
        expected = mapping.status_of(document, version)
        if body.get("status") != expected:
            raise UnprocessableResource(
                f"status is {expected} and cannot be changed by an update (DELETE marks a "
                "document entered-in-error).",
                expression=["DocumentReference.status"],
            )
        if document.status == DocumentStatus.DELETED:
            raise Conflict("An entered-in-error document cannot be changed.")
        _check_attachment(given.attachment, version, base=base, where="DocumentReference")
    changed = _apply(document, given)
    described = repository.draft(session, document.id)
    if described is not None:
        session.delete(described)
    if changed or described is not None:
        _touch(document)
        session.flush()
        _record_update(session, context, document, changed)
        search_index.index_document(session, runtime, document.id)
    return resource(session, document, version, base)


def describe_binary(
    *,
    session: Session,
    runtime: Runtime,
    principal: Principal,
    given: mapping.DocumentInput,
    context: AuditContext,
    base: str,
) -> dict[str, Any]:
    """``POST DocumentReference`` with ``attachment.url``: describe a Binary stored first.

    Only a Binary stored by ``POST /fhir/Binary`` and not yet described can be claimed;
    a described document changes through PUT with If-Match.
    """
    target = split_reference(given.attachment.url or "", base)
    version_id = parse_uuid(target[1]) if target and target[0] == "Binary" else None
    version = repository.version_by_id(session, version_id) if version_id else None
    if version is None:
        raise UnknownReference(
            "attachment.url must name a Binary on this server (Binary/{id}).",
            expression=["DocumentReference.content[0].attachment.url"],
        )
    try:
        document, _ = document_service.readable_or_404(session, principal, version.document_id)
    except NotFound as exc:
        unknown = UnknownReference(
            "attachment.url must name a Binary on this server (Binary/{id}).",
            expression=["DocumentReference.content[0].attachment.url"],
        )
        unknown.denial = exc.denial  # a refused record is still audited as one
        raise unknown from exc
    with audited_attempt(_attempt(principal, document, "document.update")):
        if given.patient_id != document.patient_id:
            raise UnprocessableResource(
                "The Binary belongs to another patient than subject.",
                expression=["DocumentReference.subject"],
            )
        _lock(session, document)
        draft = repository.draft(session, document.id)
        if (
            draft is None
            or version.version != document.current_version
            or document.status != DocumentStatus.CURRENT
        ):
            raise Conflict(
                f"This Binary already belongs to DocumentReference/{document.id}; change that "
                "document with PUT (If-Match) instead."
            )
        require_change(principal, document)
        check_declared(given.attachment, version, where="DocumentReference")
    changed = _apply(document, given)
    session.delete(draft)
    _touch(document)
    session.flush()
    _record_update(session, context, document, changed, described=True)
    search_index.index_document(session, runtime, document.id)
    return mapping.to_resource(document, version, base=base)


def delete(
    *,
    session: Session,
    principal: Principal,
    raw_id: str,
    if_match: str | None,
    reason: str,
    context: AuditContext,
) -> bool:
    """Mark a document entered-in-error (a soft delete); False if it already was."""
    ref = document_id_or_404(raw_id)
    document, _ = _version_of(session, principal, ref)
    require_change(principal, document)
    with audited_attempt(_attempt(principal, document, "document.delete")):
        if ref.version is not None:
            raise NotSupported(
                f"Delete the document ({document.id}); its superseded versions go with it."
            )
        _lock(session, document)
        if document.status == DocumentStatus.DELETED:
            return False  # FHIR deletes are idempotent
        _check_match(document, if_match, required=False)
    document_service.soft_delete(
        session=session,
        principal=principal,
        document_id=document.id,
        reason=reason,
        context=context,
    )
    return True
