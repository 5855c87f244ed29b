"""Transaction Bundles: Binaries and the DocumentReferences that describe them, atomically.

The order mirrors a single upload (see ``documents.upload``), for many at once:

1. the body streams through the JSON reader; each base64 payload is decoded into its
   own ingest pipeline (hashed, sniffed, encrypted) and made durable under a fresh key;
2. the whole Bundle is validated and every ``urn:uuid`` reference resolved: each
   Binary belongs to exactly one DocumentReference of the same Bundle;
3. ONE database transaction checks every patient and duplicate, adds every row and
   audit event, and commits;
4. any failure before that commit is attempted discards every blob, so an invalid
   entry anywhere leaves nothing at all. A failure *during* the commit has an unknown
   outcome, and the blobs are kept (an orphan blob is harmless; a row without its blob
   would be data loss), exactly as for a single upload.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from sqlalchemy.orm import Session

from medvault.access.authorship import origin_for
from medvault.access.denials import denied, failed_attempt
from medvault.access.policy import reaches_every_patient
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import arrival
from medvault.documents import repository as documents
from medvault.documents.filenames import sanitize_filename
from medvault.documents.ingest import IngestPipeline, IngestResult, pump
from medvault.documents.models import Classification, Document, DocumentStatus, DocumentVersion
from medvault.documents.sniffing import extension_for
from medvault.documents.upload_target import check_patient
from medvault.fhir.mapping import document_reference as mapping
from medvault.fhir.mapping.codes import version_token
from medvault.fhir.wire.base64_stream import base64_decoded
from medvault.fhir.wire.bundle import transaction_response
from medvault.fhir.wire.json_stream import Path, StreamedString, StreamingJsonReader
from medvault.fhir.wire.outcome import NotSupported, UnknownReference, UnprocessableResource
from medvault.fhir.wire.primitives import instant, weak_etag
from medvault.fhir.wire.references import URN_UUID, split_reference
from medvault.fhir.wire.validation import validate_structure
from medvault.kit.clock import utcnow
from medvault.kit.problems import DuplicateDocument, UnknownPatient
from medvault.patients import repository as patients
from medvault.runtime import Runtime
from medvault.search import index as search_index

MAX_ENTRIES = 100
MAX_PAYLOADS = 20
GENERIC_TYPES = frozenset({"application/octet-stream"})


def _payload_path(path: Path) -> bool:
    """Base64 in a Binary entry, or inline in a DocumentReference entry's attachment."""
    if len(path) < 4 or path[0] != "entry" or not isinstance(path[1], int) or path[2] != "resource":
        return False
    rest = path[3:]
    return rest == ("data",) or (
        len(rest) == 4
        and rest[0] == "content"
        and isinstance(rest[1], int)
        and rest[2:] == ("attachment", "data")
    )


@dataclass(frozen=True)
class _NewDocument:
    entry: int
    given: mapping.DocumentInput
    payload: IngestResult
    inspection: arrival.Inspection
    binary_entry: int | None


def _check_declared(declared_type: Any, size: Any, payload: IngestResult, where: str) -> None:
    if isinstance(declared_type, str):
        declared = declared_type.split(";")[0].strip().lower()
        if declared not in GENERIC_TYPES and declared != payload.content_type:
            raise UnprocessableResource(
                f"contentType does not match the bytes, which are {payload.content_type}.",
                expression=[f"{where}.contentType"],
            )
    if isinstance(size, int) and size != payload.size:
        raise UnprocessableResource(
            f"size does not match the data, which has {payload.size} bytes.",
            expression=[f"{where}.size"],
        )


def plan(
    bundle: dict[str, Any],
    payloads: dict[int, IngestResult],
    inspections: dict[int, arrival.Inspection],
    *,
    base: str,
) -> list[_NewDocument]:
    """Check every entry and resolve every reference; nothing is stored yet."""
    if bundle.get("type") != "transaction":
        raise NotSupported(
            "POST /fhir takes a transaction Bundle (type transaction).", expression=["Bundle.type"]
        )
    entries = bundle.get("entry") or []
    if len(entries) > MAX_ENTRIES:
        raise NotSupported(f"At most {MAX_ENTRIES} entries per transaction.")
    binaries: dict[str, int] = {}
    references: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        request = entry.get("request") or {}
        resource = entry.get("resource") or {}
        kind = resource.get("resourceType")
        if (
            request.get("method") != "POST"
            or request.get("url") != kind
            or kind
            not in (
                "Binary",
                "DocumentReference",
            )
        ):
            raise NotSupported(
                "A transaction may only create (POST) Binary and DocumentReference resources; "
                "request.url must be the resource type.",
                expression=[f"{where}.request"],
            )
        if kind == "Binary":
            full_url = entry.get("fullUrl")
            if not isinstance(full_url, str) or not full_url.startswith(URN_UUID):
                raise UnprocessableResource(
                    "A Binary entry needs a urn:uuid fullUrl for its DocumentReference to name it.",
                    expression=[f"{where}.fullUrl"],
                )
            if full_url in binaries:
                raise UnprocessableResource(
                    "Two entries share a fullUrl.", expression=[f"{where}.fullUrl"]
                )
            if not isinstance(resource.get("data"), StreamedString):
                raise UnprocessableResource(
                    "The Binary has no data.", expression=[f"{where}.resource.data"]
                )
            binaries[full_url] = index
        else:
            references.append((index, resource))
    documents_planned: list[_NewDocument] = []
    claimed: dict[int, int] = {}
    for index, resource in references:
        where = f"Bundle.entry[{index}].resource"
        given = mapping.from_resource(resource, base=base, where=where)
        attachment = given.attachment
        binary_entry: int | None = None
        if attachment.data is not None:
            data_index = attachment.data.index
            payload = payloads[data_index]
        else:
            binary_entry = binaries.get(attachment.url or "")
            if binary_entry is None:
                raise UnknownReference(
                    "In a transaction, attachment.url must be the urn:uuid fullUrl of a Binary "
                    "entry of the same Bundle.",
                    expression=[f"{where}.content[0].attachment.url"],
                )
            if binary_entry in claimed:
                raise UnprocessableResource(
                    f"Bundle.entry[{binary_entry}] is already the content of "
                    f"Bundle.entry[{claimed[binary_entry]}]: one Binary, one document.",
                    expression=[f"{where}.content[0].attachment.url"],
                )
            claimed[binary_entry] = index
            binary = entries[binary_entry]["resource"]
            data_index = binary["data"].index
            payload = payloads[data_index]
            _check_context(
                binary,
                resource_entry=entries[index],
                given=given,
                base=base,
                where=f"Bundle.entry[{binary_entry}].resource",
            )
            _check_declared(
                binary.get("contentType"), None, payload, f"Bundle.entry[{binary_entry}].resource"
            )
        content = resource["content"][0]["attachment"]
        _check_declared(
            content.get("contentType"),
            content.get("size"),
            payload,
            f"{where}.content[0].attachment",
        )
        if attachment.sha1_hex is not None and attachment.sha1_hex != payload.sha1:
            raise UnprocessableResource(
                "attachment.hash is not the SHA-1 of the data.",
                expression=[f"{where}.content[0].attachment.hash"],
            )
        documents_planned.append(
            _NewDocument(index, given, payload, inspections[data_index], binary_entry)
        )
    unclaimed = sorted(set(binaries.values()) - set(claimed))
    if unclaimed:
        raise UnprocessableResource(
            "Every Binary of a transaction must be the content of one of its DocumentReferences.",
            expression=[f"Bundle.entry[{i}]" for i in unclaimed],
        )
    return documents_planned


def _check_context(
    binary: dict[str, Any],
    *,
    resource_entry: dict[str, Any],
    given: mapping.DocumentInput,
    base: str,
    where: str,
) -> None:
    context = binary.get("securityContext")
    reference = context.get("reference") if isinstance(context, dict) else None
    if reference is None:
        return
    if reference == resource_entry.get("fullUrl"):
        return
    target = split_reference(reference, base)
    if target != ("Patient", str(given.patient_id)):
        raise UnprocessableResource(
            "securityContext must be the DocumentReference's subject or the DocumentReference.",
            expression=[f"{where}.securityContext"],
        )


def _version_row(
    document_id: uuid.UUID, item: _NewDocument, context: AuditContext
) -> DocumentVersion:
    payload = item.payload
    return DocumentVersion(
        id=payload.version_id,
        document_id=document_id,
        version=1,
        filename=sanitize_filename(None, extension=extension_for(payload.content_type)),
        original_filename="",
        content_type=payload.content_type,
        size=payload.size,
        sha256=payload.sha256,
        sha1=payload.sha1,
        storage_key=payload.storage_key,
        kek_id=payload.kek_id,
        wrapped_dek=payload.wrapped_dek,
        created_at=utcnow(),
        created_by=context.actor_id,
        active_content=item.inspection.active_content,
    )


def _add(
    session: Session,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    item: _NewDocument,
) -> tuple[Document, DocumentVersion]:
    """One document and its first version, after the same checks as a single upload."""
    given, where = item.given, f"Bundle.entry[{item.entry}].resource"
    # The row lock serialises this patient's duplicate check, as in documents.upload.
    if patients.lock(session, given.patient_id) is None or not reaches_every_patient(principal):
        # The same answer, and the same audit, as a single upload's (documents.upload).
        unknown = UnknownPatient("No patient with this id.", expression=[f"{where}.subject"])
        check_patient(session, principal, given.patient_id, problem=unknown)
    duplicate = documents.find_duplicate(session, given.patient_id, item.payload.sha256)
    if duplicate is not None:
        problem = DuplicateDocument(
            "This patient already has a document with identical content "
            f"(DocumentReference/{duplicate.id}).",
            existing_document_id=str(duplicate.id),
            expression=[where],
        )
        attempt = failed_attempt(
            principal,
            "document.create",
            resource_type="Document",
            resource_id=None,
            patient_id=given.patient_id,
        )
        raise denied(problem, attempt)
    now = utcnow()
    document = Document(
        id=uuid.uuid4(),
        patient_id=given.patient_id,
        document_type=given.document_type,
        title=given.title or "Untitled document",
        description=given.description,
        classification=(given.classification or Classification.NORMAL).value,
        status=DocumentStatus.CURRENT.value,
        current_version=1,
        created_at=now,
        updated_at=now,
        created_by=context.actor_id,
        origin=origin_for(principal).value,
    )
    session.add(document)
    session.flush()
    version = _version_row(document.id, item, context)
    session.add(version)
    session.flush()
    arrival.arm(session, runtime, version)
    search_index.index_upload(session, runtime, document, version, new_document=True)
    # As for every upload: no title or file name in the event, they may name the patient.
    audit.record(
        session=session,
        context=context,
        action="document.create",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={"version": 1, "size": version.size, "content_type": version.content_type},
    )
    return document, version


def _commit(
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    planned: list[_NewDocument],
    entry_count: int,
    base: str,
    attempted: list[bool],
) -> dict[str, Any]:
    responses: list[dict[str, Any] | None] = [None] * entry_count
    with runtime.clinical.session() as session:
        # Patients are locked in one order, so two transactions naming the same patients
        # wait for each other instead of deadlocking.
        for patient_id in sorted({item.given.patient_id for item in planned}):
            patients.lock(session, patient_id)
        for item in planned:
            document, version = _add(session, runtime, principal, context, item)
            resource = mapping.to_resource(document, version, base=base)
            token = version_token(document.updated_at)
            responses[item.entry] = {
                "fullUrl": f"{base}/DocumentReference/{document.id}",
                "resource": resource,
                "response": {
                    "status": "201 Created",
                    "location": f"DocumentReference/{document.id}/_history/{token}",
                    "etag": weak_etag(token),
                    "lastModified": instant(document.updated_at),
                },
            }
            if item.binary_entry is not None:
                responses[item.binary_entry] = {
                    "response": {
                        "status": "201 Created",
                        "location": f"Binary/{version.id}/_history/1",
                        "etag": weak_etag("1"),
                        "lastModified": instant(version.created_at),
                    }
                }
        attempted[0] = True
        session.commit()
    return transaction_response([r for r in responses if r is not None])


async def process(
    *,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    body: Any,
    base: str,
) -> dict[str, Any]:
    """Run a transaction Bundle: all of it, or (if anything is wrong) none of it."""
    reader = StreamingJsonReader(body, stream_at=_payload_path, max_streams=MAX_PAYLOADS)
    pipelines: list[IngestPipeline] = []
    payloads: dict[int, IngestResult] = {}
    attempted = [False]
    try:
        while (marker := await reader.next_stream()) is not None:
            # SHA-1 while streaming: a DocumentReference may declare attachment.hash,
            # and it is checked before anything commits.
            pipeline = IngestPipeline(runtime=runtime, sha1=True)
            pipelines.append(pipeline)
            await pump(base64_decoded(reader.stream()), pipeline)
            payloads[marker.index] = await to_thread.run_sync(pipeline.finish)
        inspections = {
            index: await to_thread.run_sync(arrival.inspect, runtime, payload)
            for index, payload in payloads.items()
        }
        bundle = validate_structure(reader.document, expected="Bundle")
        planned = plan(bundle, payloads, inspections, base=base)
        entry_count = len(bundle.get("entry") or [])
        return await to_thread.run_sync(
            _commit, runtime, principal, context, planned, entry_count, base, attempted
        )
    except BaseException:
        if not attempted[0]:
            for pipeline in pipelines:
                await to_thread.run_sync(pipeline.discard)
        raise
