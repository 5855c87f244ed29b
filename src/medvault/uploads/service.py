"""Resumable uploads: create one, look at it, end it. Appending is ``uploads.appending``.

Authorisation is the single-request upload's, through the same code: ``require_upload``
and ``UploadTarget.precheck`` decide at creation and again at every request that adds
bytes. Beyond that an upload belongs to its creator: anyone else is told it does not
exist (404), and the attempt is audited against the patient it names.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from medvault.access.denials import Denial, denied, failed_attempt
from medvault.access.policy import Permission, require_upload
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents.ingest import EmptyFile
from medvault.documents.schemas import DocumentFields
from medvault.documents.upload import check_client_filename
from medvault.documents.upload_target import UploadTarget
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_, msg
from medvault.kit.ids import parse_id
from medvault.kit.problems import NotFound, PayloadTooLarge
from medvault.runtime import Runtime
from medvault.uploads import repository
from medvault.uploads.models import Upload, UploadStatus
from medvault.uploads.protocol import BadUploadHeader, UploadGone, UploadLocked, parse_metadata
from medvault.uploads.staging import SealedChunk

# Upload-Metadata keys that are document fields; tus clients add others (filetype,
# name, relativePath...), which are kept in the header HEAD echoes and otherwise ignored.
FIELD_KEYS = (
    "patient_id",
    "document_type",
    "title",
    "description",
    "classification",
    "filename",
    "on_duplicate",
)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class UploadView:
    """What HEAD and the other answers report about an upload."""

    id: uuid.UUID
    offset: int
    length: int | None
    metadata_header: str
    expires_at: datetime
    status: UploadStatus
    document_id: uuid.UUID | None

    @classmethod
    def of(cls, upload: Upload) -> UploadView:
        return cls(
            id=upload.id,
            offset=upload.offset,
            length=upload.length,
            metadata_header=upload.metadata_header,
            expires_at=upload.expires_at,
            status=UploadStatus(upload.status),
            document_id=upload.result_document_id,
        )


def expiry(runtime: Runtime, now: datetime) -> datetime:
    return now + timedelta(seconds=runtime.settings.upload_expiry_seconds)


def _document_fields(metadata: dict[str, str]) -> dict[str, str]:
    fields = {key: metadata[key] for key in FIELD_KEYS if key in metadata}
    # tus-js-client and Uppy name the file "filename" or "name".
    if "filename" not in fields and metadata.get("name"):
        fields["filename"] = metadata["name"]
    return fields


def _declared_sha256(metadata: dict[str, str]) -> str | None:
    declared = metadata.get("sha256")
    if declared is None:
        return None
    if not _SHA256_HEX.match(declared):
        raise BadUploadHeader(N_("The sha256 metadata must be 64 lowercase hex digits."))
    return declared


def target_of(runtime: Runtime, principal: Principal, upload: Upload) -> UploadTarget:
    return UploadTarget(runtime, principal, upload.document_id)


def create(
    *,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    length: int | None,
    defer_length: bool,
    metadata_header: str | None,
) -> Upload:
    """Check everything a single-request upload would check up front, then record it."""
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)
    if (length is None) == (not defer_length):
        raise BadUploadHeader(N_("Send Upload-Length, or Upload-Defer-Length: 1, not both."))
    limit = runtime.settings.max_upload_bytes
    if length is not None and length > limit:
        raise PayloadTooLarge(
            msg("The file is larger than the limit of {limit} bytes.", limit=limit),
            max_bytes=limit,
        )
    if length == 0:
        raise EmptyFile(N_("Send a non-empty file."))
    metadata = parse_metadata(metadata_header)
    document_id = None
    if metadata.get("document_id"):
        document_id = parse_id(metadata["document_id"])
    fields = _document_fields(metadata)
    if (declared := _declared_sha256(metadata)) is not None:
        fields["sha256"] = declared
    target = UploadTarget(runtime, principal, document_id)
    checked = target.validate(fields)
    # Checked now, not after the last byte: the single request's rule for file names.
    check_client_filename(fields.get("filename"))
    target.precheck(checked)  # the patient's or document's refusal, audited
    assert target.attempt is not None and target.attempt.patient_id is not None
    patient_id = target.attempt.patient_id
    now = utcnow()
    upload = Upload(
        id=uuid.uuid4(),
        owner_kind=principal.kind.value,
        owner_id=principal.subject_id,
        patient_id=patient_id,
        document_id=document_id,
        fields=fields,
        metadata_header=(metadata_header or "").strip(),
        length=length,
        offset=0,
        next_chunk=0,
        status=UploadStatus.RECEIVING.value,
        created_at=now,
        updated_at=now,
        expires_at=expiry(runtime, now),
    )
    with runtime.clinical.session() as session:
        session.add(upload)
        audit.record(
            session=session,
            context=context,
            action="upload.create",
            resource_type="Upload",
            resource_id=upload.id,
            patient_id=patient_id,
            details={
                "length": length,
                "new_version_of": str(document_id) if document_id else None,
                "new_document": isinstance(checked, DocumentFields),
            },
        )
        session.commit()
        session.refresh(upload)
        session.expunge(upload)
    return upload


def load(runtime: Runtime, principal: Principal, upload_id: str) -> Upload:
    """The caller's own upload, or 404 (a stranger's is audited as an attempt).

    The access policy first, as for any upload: who may not upload has no uploads.
    """
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)
    missing = NotFound(N_("No such upload."))
    try:
        parsed = uuid.UUID(upload_id)
    except ValueError:
        raise missing from None
    with runtime.clinical.read_session() as session:
        upload = repository.get(session, parsed)
        if upload is not None:
            session.expunge(upload)
    if upload is None:
        raise missing
    if upload.owner_kind != principal.kind.value or upload.owner_id != principal.subject_id:
        permission = Permission.DOCUMENT_WRITE.value
        raise denied(missing, Denial(principal, "Upload", upload.id, upload.patient_id, permission))
    return upload


def check_open(upload: Upload, now: datetime) -> None:
    """410 for an upload that can take no more bytes: expired, or refused for good."""
    if upload.status == UploadStatus.REFUSED.value:
        raise UploadGone(
            msg("This upload was refused ({reason}); start a new one.", reason=upload.refusal)
        )
    if upload.status == UploadStatus.RECEIVING.value and upload.expires_at < now:
        raise UploadGone(N_("This upload expired before it was finished; start a new one."))


def status(
    runtime: Runtime, principal: Principal, context: AuditContext, upload_id: str
) -> UploadView:
    """Where the caller's upload stands. Audited like any read of the record: the answer
    carries the upload's metadata (its title and file name), and its event is durable
    before the answer leaves."""
    upload = load(runtime, principal, upload_id)
    check_open(upload, utcnow())
    event = audit.build(
        context=context,
        action="upload.status",
        resource_type="Upload",
        resource_id=upload.id,
        patient_id=upload.patient_id,
        details={"offset": upload.offset},
    )
    audit.record_read(runtime.clinical, event)
    return UploadView.of(upload)


def terminate(
    *, runtime: Runtime, principal: Principal, context: AuditContext, upload_id: str
) -> None:
    """End an upload: its chunks and its record go. A finished upload's document stays."""
    upload = load(runtime, principal, upload_id)
    now = utcnow()
    with runtime.clinical.session() as session:
        token = uuid.uuid4()
        until = now + timedelta(seconds=runtime.settings.upload_lock_seconds)
        if not repository.take_lease(session, upload.id, token, now=now, until=until):
            raise UploadLocked(N_("A request is still appending to this upload."))
        session.commit()
        chunks = repository.chunks(session, upload.id)
    discard_chunks(runtime, chunks)
    with runtime.clinical.session() as session:
        row = repository.get(session, upload.id)
        if row is not None:
            session.delete(row)
        audit.record(
            session=session,
            context=context,
            action="upload.terminate",
            resource_type="Upload",
            resource_id=upload.id,
            patient_id=upload.patient_id,
            details={"offset": upload.offset, "status": upload.status},
        )
        session.commit()


def discard_chunks(runtime: Runtime, chunks: list[SealedChunk]) -> None:
    for chunk in chunks:
        runtime.blobs.delete(chunk.storage_key)


def attempt_on(principal: Principal, upload: Upload) -> Denial:
    """How a refusal of a request on this upload is audited: an attempt on the record."""
    return failed_attempt(
        principal,
        "upload.append",
        resource_type="Upload",
        resource_id=upload.id,
        patient_id=upload.patient_id,
    )
