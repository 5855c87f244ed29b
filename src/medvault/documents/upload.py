"""Upload use cases: a new document, or a new version of one.

The order is what makes crashes safe (see ARCHITECTURE.md, "Upload"):

1. metadata is validated and the patient/document checked as early as the body allows;
2. the body streams through :class:`IngestPipeline` into a blob under a fresh key;
3. the blob is made durable;
4. one transaction adds the rows and the audit event, after the duplicate check;
5. any failure before the commit is attempted removes the blob. A failure *during*
   commit has an unknown outcome, so the blob is kept: an orphan blob is harmless
   and reconciled later, a row without its blob would be data loss.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from anyio import to_thread
from sqlalchemy.orm import Session

from medvault.access.authorship import origin_for, require_change
from medvault.access.denials import (
    audited_attempt,
    failed_attempt,
)
from medvault.access.policy import reaches_every_patient
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.db.group_commit import GroupCommitFailed
from medvault.documents import arrival, repository
from medvault.documents import service as documents
from medvault.documents.filenames import display_filename, sanitize_filename
from medvault.documents.ingest import IngestPipeline, IngestResult, pump
from medvault.documents.models import Document, DocumentStatus, DocumentVersion
from medvault.documents.schemas import (
    MAX_FILENAME_CHARS,
    MAX_TITLE_CHARS,
    DocumentFields,
    DocumentOut,
    OnDuplicate,
    VersionFields,
)
from medvault.documents.sniffing import extension_for
from medvault.documents.upload_target import UploadTarget, check_patient
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_, msg
from medvault.kit.multipart import (
    FileChunk,
    FilePartEnd,
    FilePartStart,
    FormField,
    MalformedMultipart,
    boundary_from_content_type,
    iter_multipart,
)
from medvault.kit.problems import (
    DuplicateDocument,
    MissingFile,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
    VersionConflict,
)
from medvault.kit.text import require_clean_text
from medvault.patients import repository as patients
from medvault.runtime import Runtime
from medvault.search import index as search_index

# Room for form fields and part headers on top of the file itself.
MULTIPART_OVERHEAD_BYTES = 1024 * 1024
FILE_FIELD = "file"
VERSION_RETRIES = 5

# Runs inside the upload's own transaction, just before it commits: rows that must
# exist exactly when the document does (e.g. the FHIR Binary draft marker).
OnCommit = Callable[[Session, Document, DocumentVersion], None]


async def upload(
    *,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    body: AsyncIterator[bytes],
    content_type: str,
    content_length: int | None,
    query: Mapping[str, str],
    document_id: uuid.UUID | None = None,
    fields_after_body: Callable[[], Awaitable[Mapping[str, str]]] | None = None,
    on_commit: OnCommit | None = None,
    sha1: bool = False,
) -> DocumentOut:
    """Store an upload sent either as multipart/form-data or as the raw request body.

    ``sha1`` computes FHIR's SHA-1 while the body streams, for callers that check a
    declared hash before committing; otherwise a job computes it after the commit.
    ``fields_after_body`` is for raw bodies cut out of a larger message whose metadata
    may also follow the file (a FHIR resource with base64 data): it is awaited once
    the file bytes are consumed, and its fields are added to ``query``.
    """
    multipart = content_type.lower().startswith("multipart/form-data")
    limit = runtime.settings.max_upload_bytes
    if content_length is not None and content_length > limit + (
        MULTIPART_OVERHEAD_BYTES if multipart else 0
    ):
        raise PayloadTooLarge(
            msg("The file is larger than the limit of {limit} bytes.", limit=limit),
            max_bytes=limit,
        )
    target = UploadTarget(runtime, principal, document_id, declared_bytes=content_length)
    pipeline = IngestPipeline(runtime=runtime, sha1=sha1)
    try:
        if multipart:
            raw_fields, client_filename = await _receive_multipart(
                body, content_type, pipeline, dict(query), target
            )
        else:
            raw_fields, client_filename = dict(query), query.get("filename")
            if fields_after_body is None:
                await target.check_early(target.validate(raw_fields))
            else:
                await target.check_early_if_complete(raw_fields)
            await pump(body, pipeline)
            if fields_after_body is not None:
                raw_fields.update(await fields_after_body())
                client_filename = raw_fields.get("filename")
        fields = target.validate(raw_fields)
        check_client_filename(client_filename)
        result = await to_thread.run_sync(pipeline.finish)
        inspection = await to_thread.run_sync(arrival.inspect, runtime, result)
    except BaseException as error:
        await to_thread.run_sync(pipeline.discard)
        await target.refused(error)
        raise
    stored = _StoredUpload(
        runtime, principal, context, result, inspection, client_filename, on_commit
    )
    return await to_thread.run_sync(_commit_or_discard, stored, fields, document_id, pipeline)


def check_client_filename(name: str | None) -> None:
    """The multipart part's own filename obeys the same rules as the ``filename`` field."""
    require_clean_text([("filename", name)])
    if name is not None and len(name) > MAX_FILENAME_CHARS:
        raise ValidationFailed(
            msg("A file name is at most {limit} characters.", limit=MAX_FILENAME_CHARS)
        )


async def _receive_multipart(
    body: AsyncIterator[bytes],
    content_type: str,
    pipeline: IngestPipeline,
    fields: dict[str, str],
    target: UploadTarget,
) -> tuple[dict[str, str], str | None]:
    boundary = boundary_from_content_type(content_type)
    events = aiter(iter_multipart(body, boundary))
    filename: str | None = None
    seen_file = file_complete = False

    async def file_data() -> AsyncIterator[bytes]:
        nonlocal file_complete
        async for event in events:
            if isinstance(event, FileChunk):
                yield event.data
            elif isinstance(event, FilePartEnd):
                file_complete = True
                return

    async for event in events:
        if isinstance(event, FormField):
            fields.setdefault(event.name, event.value)
        elif isinstance(event, FilePartStart):
            if event.name != FILE_FIELD:
                raise MalformedMultipart(
                    msg("Unexpected file field {name}; use 'file'.", name=repr(event.name))
                )
            if seen_file:
                raise MalformedMultipart(N_("Send one file per upload."))
            seen_file = True
            filename = event.filename
            # Fields sent before the file let us refuse a bad upload before reading it.
            await target.check_early_if_complete(fields)
            await pump(file_data(), pipeline)
    if not seen_file:
        raise MissingFile(N_("Send the document in a form field named 'file'."))
    if not file_complete:
        raise MalformedMultipart(N_("The file part ended early."))
    return fields, fields.get("filename") or filename


@dataclass(frozen=True)
class _StoredUpload:
    """An upload whose blob is durable: all that is left is one transaction."""

    runtime: Runtime
    principal: Principal
    context: AuditContext
    result: IngestResult
    inspection: arrival.Inspection
    client_filename: str | None
    on_commit: OnCommit | None = None

    def version_row(self, document_id: uuid.UUID, number: int) -> DocumentVersion:
        result = self.result
        return DocumentVersion(
            id=result.version_id,
            document_id=document_id,
            version=number,
            filename=sanitize_filename(
                self.client_filename, extension=extension_for(result.content_type)
            ),
            original_filename=display_filename(self.client_filename),
            content_type=result.content_type,
            size=result.size,
            sha256=result.sha256,
            sha1=result.sha1,
            storage_key=result.storage_key,
            kek_id=result.kek_id,
            wrapped_dek=result.wrapped_dek,
            created_at=utcnow(),
            created_by=self.context.actor_id,
            active_content=self.inspection.active_content,
        )


def _commit_or_discard(
    stored: _StoredUpload,
    fields: DocumentFields | VersionFields,
    document_id: uuid.UUID | None,
    pipeline: IngestPipeline,
) -> DocumentOut:
    attempted = False

    def mark_attempted() -> None:
        nonlocal attempted
        attempted = True

    try:
        for attempt in range(1, VERSION_RETRIES + 1):
            try:
                if isinstance(fields, DocumentFields):
                    return _commit_new_document(stored, fields, before_commit=mark_attempted)
                assert document_id is not None
                return _commit_new_version(
                    stored, fields, document_id, before_commit=mark_attempted
                )
            except VersionConflict:
                # Another upload took the next version number first. The blob is keyed
                # by version id, not number, so simply take the following number.
                if attempt == VERSION_RETRIES:
                    raise
        raise AssertionError("unreachable")
    except BaseException:
        if not attempted:
            pipeline.discard()
        raise


def _append_version(session: Session, document: Document, stored: _StoredUpload) -> DocumentVersion:
    expected = repository.lock_current_version(session, document.id)
    if not repository.advance_version(session, document.id, expected, utcnow()):
        raise VersionConflict(N_("Retry the upload; another version was added meanwhile."))
    version = stored.version_row(document.id, expected + 1)
    session.add(version)
    session.flush()
    session.refresh(document)
    return version


def _reject_duplicate(
    session: Session, patient_id: uuid.UUID, result: IngestResult, policy: OnDuplicate
) -> Document | None:
    duplicate = repository.find_duplicate(session, patient_id, result.sha256)
    if duplicate is not None and policy is OnDuplicate.REJECT:
        raise DuplicateDocument(
            N_(
                "This patient already has a document with identical content. Send "
                "on_duplicate=allow to store it anyway, or on_duplicate=new_version to add it "
                "as a new version of the existing document."
            ),
            existing_document_id=str(duplicate.id),
        )
    return duplicate


def _commit_new_document(
    stored: _StoredUpload, fields: DocumentFields, *, before_commit: Callable[[], None]
) -> DocumentOut:
    """Commit a new document in a transaction shared with concurrent uploads and reads.

    On SQLite one BEGIN IMMEDIATE and one fsync serve the batch instead of each upload
    queueing for its own; on PostgreSQL one COMMIT round trip (``db.group_commit``).
    """

    def work(session: Session) -> DocumentOut:
        # The row lock serialises this patient's duplicate check; the scope check only
        # matters for callers who do not reach every patient anyway.
        if patients.lock(session, fields.patient_id) is None or not reaches_every_patient(
            stored.principal
        ):
            check_patient(session, stored.principal, fields.patient_id)
        attempt = failed_attempt(
            stored.principal,
            "document.create",
            resource_type="Document",
            resource_id=None,
            patient_id=fields.patient_id,
        )
        with audited_attempt(attempt):
            return _store_new_document(session, stored, fields)

    try:
        # ``before_commit`` marks the moment from which the blob may be referenced: a
        # batch that fails before it leaves nothing, and the caller removes the blob.
        return stored.runtime.clinical.group_commit.run(
            work, order=str(fields.patient_id), before_commit=before_commit
        )
    except GroupCommitFailed as exc:
        raise ServiceUnavailable(
            N_("The upload could not be committed, so nothing was stored. Try again.")
        ) from exc


def _store_new_document(
    session: Session,
    stored: _StoredUpload,
    fields: DocumentFields,
) -> DocumentOut:
    """The duplicate check, the rows and the audit event of an upload; the caller commits."""
    context = stored.context
    duplicate = _reject_duplicate(session, fields.patient_id, stored.result, fields.on_duplicate)
    if duplicate is not None and fields.on_duplicate is OnDuplicate.NEW_VERSION:
        # Adding to an existing document: the same authorship rule as any new version.
        require_change(stored.principal, duplicate)
        document = duplicate
        version = _append_version(session, document, stored)
        action = "document.version.create"
    else:
        now = utcnow()
        document = Document(
            id=uuid.uuid4(),
            patient_id=fields.patient_id,
            document_type=fields.document_type,
            # A title derived from a long file name is cut to fit the column (an
            # explicit title that long was already refused with 422).
            title=fields.title
            or display_filename(stored.client_filename)[:MAX_TITLE_CHARS].strip()
            or "Untitled document",
            description=fields.description,
            classification=fields.classification.value,
            status=DocumentStatus.CURRENT.value,
            current_version=1,
            created_at=now,
            updated_at=now,
            created_by=context.actor_id,
            origin=origin_for(stored.principal).value,
        )
        # No flush here: the search entry's flush below inserts the document, its
        # version and its jobs in one unit of work, ordered by their foreign keys.
        session.add(document)
        version = stored.version_row(document.id, 1)
        session.add(version)
        action = "document.create"
    arrival.arm(session, stored.runtime, version)
    new_document = action == "document.create"
    search_index.index_upload(session, stored.runtime, document, version, new_document=new_document)
    _record_upload(session, context, action, document, version)
    if stored.on_commit is not None:
        stored.on_commit(session, document, version)
    return documents.to_out(document, version)


def _commit_new_version(
    stored: _StoredUpload,
    fields: VersionFields,
    document_id: uuid.UUID,
    *,
    before_commit: Callable[[], None],
) -> DocumentOut:
    with stored.runtime.clinical.session() as session:
        document, _ = documents.resolve_version(
            session=session,
            principal=stored.principal,
            document_id=document_id,
            number=None,
            attempt="document.version.create",
        )
        # Checked again in the transaction that writes: the precheck may not have run
        # (fields after the file), and this is the decision that counts.
        require_change(stored.principal, document)
        attempt = failed_attempt(
            stored.principal,
            "document.version.create",
            resource_type="Document",
            resource_id=document.id,
            patient_id=document.patient_id,
        )
        with audited_attempt(attempt):
            _reject_duplicate(session, document.patient_id, stored.result, fields.on_duplicate)
            version = _append_version(session, document, stored)
            arrival.arm(session, stored.runtime, version)
            search_index.index_upload(
                session, stored.runtime, document, version, new_document=False
            )
            _record_upload(session, stored.context, "document.version.create", document, version)
            if stored.on_commit is not None:
                stored.on_commit(session, document, version)
            before_commit()
            session.commit()
            return documents.to_out(document, version)


def _record_upload(
    session: Session,
    context: AuditContext,
    action: str,
    document: Document,
    version: DocumentVersion,
) -> None:
    # No filename or title here: they often contain a patient's name.
    audit.record(
        session=session,
        context=context,
        action=action,
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={
            "version": version.version,
            "size": version.size,
            "content_type": version.content_type,
        },
    )
