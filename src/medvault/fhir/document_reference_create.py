"""Creating a DocumentReference through FHIR: inline base64 data, or a Binary stored first.

Inline data goes through the vault's one upload pipeline (``documents.upload.upload``)
as it streams: the streaming JSON reader decodes ``attachment.data`` straight into it,
and the rest of the resource is checked once it has arrived, so anything wrong leaves
no row and no blob behind. Without data, ``attachment.url`` names a Binary stored
first (``fhir.binary_create``), which this DocumentReference then describes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from sqlalchemy.orm import Session

from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import repository as documents
from medvault.documents import upload
from medvault.documents.models import Document, DocumentVersion
from medvault.fhir import document_reference, hashing
from medvault.fhir.mapping import document_reference as mapping
from medvault.fhir.wire.base64_stream import base64_decoded
from medvault.fhir.wire.json_stream import Path, StreamingJsonReader
from medvault.fhir.wire.outcome import NotSupported
from medvault.fhir.wire.references import parse_uuid, split_reference
from medvault.fhir.wire.validation import validate_structure
from medvault.runtime import Runtime


def _attachment_data(path: Path) -> bool:
    return (
        len(path) == 4
        and path[0] == "content"
        and isinstance(path[1], int)
        and path[2:] == ("attachment", "data")
    )


@dataclass(frozen=True)
class Created:
    resource: dict[str, Any]
    document_id: uuid.UUID


async def create_document_reference(
    *,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    body: AsyncIterator[bytes],
    base: str,
) -> Created:
    """``POST /fhir/DocumentReference``: inline base64 data, or a Binary stored first."""
    reader = StreamingJsonReader(body, stream_at=_attachment_data, max_streams=1)
    marker = await reader.next_stream()
    if marker is None:
        resource = validate_structure(reader.document, expected="DocumentReference")
        given = mapping.from_resource(resource, base=base)
        return await to_thread.run_sync(_describe, runtime, principal, context, given, base)
    given_holder: list[mapping.DocumentInput] = []

    async def rest_of_resource() -> Mapping[str, str]:
        if await reader.next_stream() is not None:  # pragma: no cover - max_streams=1
            raise NotSupported("A document has one attachment.")
        resource = validate_structure(reader.document, expected="DocumentReference")
        given = mapping.from_resource(resource, base=base)
        given_holder.append(given)
        return given.upload_fields()

    def on_commit(session: Session, document: Document, version: DocumentVersion) -> None:
        document_reference.check_declared(
            given_holder[0].attachment, version, where="DocumentReference"
        )

    created = await upload.upload(
        runtime=runtime,
        principal=principal,
        context=context,
        body=base64_decoded(reader.stream()),
        content_type="application/octet-stream",
        content_length=None,
        query=mapping.early_fields(reader.document, base=base),
        fields_after_body=rest_of_resource,
        on_commit=on_commit,
        # attachment.hash may come with the data, and is checked before the commit.
        sha1=True,
    )
    return await to_thread.run_sync(_created, runtime, created.id, base)


def _describe(
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    given: mapping.DocumentInput,
    base: str,
) -> Created:
    if given.attachment.sha1_hex is not None:
        # A declared hash is checked against the Binary's; compute that now if its job
        # has not run yet (outside the transaction: it streams the whole file).
        target = split_reference(given.attachment.url or "", base)
        version_id = parse_uuid(target[1]) if target and target[0] == "Binary" else None
        if version_id is not None:
            hashing.ensure_sha1(runtime, version_id)
    with runtime.clinical.session() as session:
        resource = document_reference.describe_binary(
            session=session,
            runtime=runtime,
            principal=principal,
            given=given,
            context=context,
            base=base,
        )
        session.commit()
    return Created(resource, uuid.UUID(resource["id"]))


def _created(runtime: Runtime, document_id: uuid.UUID, base: str) -> Created:
    with runtime.clinical.read_session() as session:
        document = session.get(Document, document_id)
        assert document is not None
        version = documents.version(session, document_id, document.current_version)
        assert version is not None
        return Created(mapping.to_resource(document, version, base=base), document_id)
