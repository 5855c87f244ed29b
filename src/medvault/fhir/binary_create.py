"""Creating a Binary through FHIR: the raw file, or a Binary resource with base64 data.

Every byte goes through the vault's one upload pipeline (``documents.upload.upload``):
streamed, size-guarded, sniffed, hashed and encrypted in one pass, the blob made
durable, then one transaction with the rows and the audit event. A Binary resource's
base64 ``data`` is read with the streaming JSON reader and decoded straight into that
pipeline; the rest of the resource is checked once it has arrived, and anything wrong
leaves no row and no blob behind. A Binary that names a patient becomes a draft
document (``BinaryDraft``) until a DocumentReference describes it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import upload
from medvault.documents.models import Document, DocumentVersion
from medvault.documents.schemas import DocumentOut
from medvault.fhir.mapping.codes import DRAFT_TYPE
from medvault.fhir.models import BinaryDraft
from medvault.fhir.wire.base64_stream import base64_decoded
from medvault.fhir.wire.json_stream import Path, StreamingJsonReader
from medvault.fhir.wire.outcome import NotSupported, UnknownReference, UnprocessableResource
from medvault.fhir.wire.references import parse_document_id, parse_uuid, split_reference
from medvault.fhir.wire.validation import validate_structure
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime

GENERIC_TYPES = frozenset({"application/octet-stream", "application/fhir+json"})


@dataclass(frozen=True)
class BinaryTarget:
    """Where a new Binary goes: a new (draft) document of a patient, or a new version."""

    patient_id: uuid.UUID | None = None
    document_id: uuid.UUID | None = None


def binary_target(reference: str | None, *, base: str, where: str) -> BinaryTarget:
    if not reference:
        raise UnprocessableResource(
            "A Binary needs a security context: X-Security-Context (or securityContext) "
            "Patient/{id} stores a new document of that patient, DocumentReference/{id} a "
            "new version of that document.",
            expression=[where],
        )
    target = split_reference(reference, base)
    if target is not None and target[0] == "Patient":
        patient_id = parse_uuid(target[1])
        if patient_id is not None:
            return BinaryTarget(patient_id=patient_id)
    if target is not None and target[0] == "DocumentReference":
        document = parse_document_id(target[1])
        if document is not None and document.version is None:
            return BinaryTarget(document_id=document.document_id)
        if document is not None:
            raise UnprocessableResource(
                "A superseded version cannot get a new version; use the document's own id.",
                expression=[where],
            )
    raise UnknownReference(
        "The security context must be Patient/{id} or DocumentReference/{id} on this server.",
        expression=[where],
    )


def _check_type(declared: str | None, version: DocumentVersion, where: str) -> None:
    declared = (declared or "").split(";")[0].strip().lower()
    if declared and declared not in GENERIC_TYPES and declared != version.content_type:
        raise UnprocessableResource(
            f"contentType does not match the bytes, which are {version.content_type}.",
            expression=[where],
        )


def _on_commit_binary(
    target: BinaryTarget, context: AuditContext, declared: dict[str, str | None]
) -> upload.OnCommit:
    """Checks and rows that must commit with a Binary's document, or not at all."""

    def on_commit(session: Session, document: Document, version: DocumentVersion) -> None:
        _check_type(declared.get("type"), version, "Binary.contentType")
        if target.document_id is None:
            # A new document that no DocumentReference describes yet.
            session.add(
                BinaryDraft(
                    document_id=document.id, created_at=utcnow(), created_by=context.actor_id
                )
            )
            session.flush()

    return on_commit


async def _store_binary(
    *,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    body: AsyncIterator[bytes],
    target: BinaryTarget,
    declared: dict[str, str | None],
) -> DocumentOut:
    query = (
        {"patient_id": str(target.patient_id), "document_type": DRAFT_TYPE}
        if target.document_id is None
        else {}
    )
    return await upload.upload(
        runtime=runtime,
        principal=principal,
        context=context,
        body=body,
        content_type="application/octet-stream",
        content_length=None,
        query=query,
        document_id=target.document_id,
        on_commit=_on_commit_binary(target, context, declared),
    )


async def create_binary_raw(
    *,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    body: AsyncIterator[bytes],
    content_type: str | None,
    security_context: str | None,
    base: str,
) -> DocumentOut:
    """``POST /fhir/Binary`` with the file itself as the body (FHIR's raw form)."""
    target = binary_target(security_context, base=base, where="X-Security-Context")
    return await _store_binary(
        runtime=runtime,
        principal=principal,
        context=context,
        body=body,
        target=target,
        declared={"type": content_type},
    )


def _binary_data(path: Path) -> bool:
    return path == ("data",)


async def create_binary_json(
    *,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    body: AsyncIterator[bytes],
    security_context: str | None,
    base: str,
) -> DocumentOut:
    """``POST /fhir/Binary`` with a Binary resource whose ``data`` is base64.

    Where the bytes go is decided before they are read, so ``securityContext`` must
    come before ``data`` (FHIR's own element order) unless the X-Security-Context
    header names it.
    """
    reader = StreamingJsonReader(body, stream_at=_binary_data, max_streams=1)
    marker = await reader.next_stream()
    partial: Any = reader.document
    if marker is None:
        validate_structure(partial, expected="Binary")
        raise UnprocessableResource("The Binary has no data.", expression=["Binary.data"])
    in_body = partial.get("securityContext") if isinstance(partial, dict) else None
    reference = in_body.get("reference") if isinstance(in_body, dict) else None
    if reference is not None and security_context is not None and reference != security_context:
        raise UnprocessableResource(
            "securityContext and X-Security-Context disagree.", expression=["Binary"]
        )
    target = binary_target(
        reference if isinstance(reference, str) else security_context,
        base=base,
        where="Binary.securityContext",
    )
    declared: dict[str, str | None] = {"type": None}

    async def rest_of_resource() -> Mapping[str, str]:
        if await reader.next_stream() is not None:  # pragma: no cover - max_streams=1
            raise NotSupported("One Binary has one data element.")
        resource = validate_structure(reader.document, expected="Binary")
        if resource.get("securityContext", in_body) != in_body:
            raise UnprocessableResource(
                "securityContext must come before data.", expression=["Binary.securityContext"]
            )
        content_type = resource.get("contentType")
        declared["type"] = content_type if isinstance(content_type, str) else None
        return {}

    return await upload.upload(
        runtime=runtime,
        principal=principal,
        context=context,
        body=base64_decoded(reader.stream()),
        content_type="application/octet-stream",
        content_length=None,
        query=(
            {"patient_id": str(target.patient_id), "document_type": DRAFT_TYPE}
            if target.document_id is None
            else {}
        ),
        document_id=target.document_id,
        fields_after_body=rest_of_resource,
        on_commit=_on_commit_binary(target, context, declared),
    )
