"""Binary: one stored version's bytes, raw or as a FHIR resource with base64 data.

The raw form is served by the same code as the REST content route (authorise, audit
before the first byte, stream, ranges, integrity checks). The resource form streams
too: the JSON is written around the base64 of the plaintext as it is decrypted, so
neither form ever holds a document in memory. It is refused above a configurable size,
because base64 JSON of a large file is a poor way to move it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.denials import Denial, denied
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import service as document_service
from medvault.documents.content import plan_content
from medvault.documents.models import DocumentVersion
from medvault.fhir import repository
from medvault.fhir.mapping.codes import instant, weak_etag
from medvault.fhir.media import dumps
from medvault.fhir.outcome import BinaryTooLargeForJson
from medvault.fhir.references import uuid_or_404
from medvault.kit.problems import NotFound
from medvault.runtime import Runtime

# Stored versions never change.
BINARY_VERSION = "1"


def locate(session: Session, principal: Principal, raw_id: str) -> DocumentVersion:
    """The version a Binary id names; whether the caller may read it is checked after.

    The access check (and its audit of a refusal) is the one every content read goes
    through (``documents.service.resolve_version``), so an existing Binary outside the
    caller's reach answers the same 404 as one that does not exist.
    """
    version_id = uuid_or_404(raw_id, "Binary")
    version = repository.version_by_id(session, version_id)
    if version is None:
        # Audited like a refused real one (one access.denied event), so the two 404s
        # cost the same and their timing does not tell them apart.
        raise denied(NotFound("No Binary with this id."), Denial(principal, "Binary", version_id))
    return version


def check_readable(session: Session, principal: Principal, version: DocumentVersion) -> None:
    """The one content-read check (410 once deleted), answering exactly like a missing id."""
    try:
        document_service.resolve_version(
            session=session,
            principal=principal,
            document_id=version.document_id,
            number=version.version,
        )
    except NotFound as exc:
        missing = NotFound("No Binary with this id.")
        missing.denial = exc.denial  # the refusal of a real record is still audited
        raise missing from None


def metadata(version: DocumentVersion) -> dict[str, Any]:
    """The Binary resource without its data (for create responses and the JSON prefix)."""
    return {
        "resourceType": "Binary",
        "id": str(version.id),
        "meta": {"versionId": BINARY_VERSION, "lastUpdated": instant(version.created_at)},
        "contentType": version.content_type,
        # Access to the bytes is decided by their document, as FHIR's securityContext says.
        "securityContext": {"reference": f"DocumentReference/{version.document_id}"},
    }


def _base64(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Base64 of a byte stream, cut at multiples of 3 bytes so the pieces concatenate.

    Slices are views: a plaintext piece is never copied on its way to the encoder.
    """
    carry = b""
    for chunk in chunks:
        view = memoryview(chunk)
        if carry:
            need = 3 - len(carry)
            if len(view) < need:
                carry += bytes(view)
                continue
            yield base64.b64encode(carry + bytes(view[:need]))
            view, carry = view[need:], b""
        usable = len(view) - len(view) % 3
        if usable:
            yield base64.b64encode(view[:usable])
        carry = bytes(view[usable:])
    if carry:
        yield base64.b64encode(carry)


@dataclass(frozen=True)
class ResourceForm:
    headers: dict[str, str]
    body: Iterator[bytes]


def resource_form(
    *,
    session: Session,
    runtime: Runtime,
    principal: Principal,
    version: DocumentVersion,
    context: AuditContext,
    raw_url: str,
) -> ResourceForm:
    """Authorise, audit (committed by the route before any byte), and plan the JSON."""
    document, version = document_service.resolve_version(
        session=session,
        principal=principal,
        document_id=version.document_id,
        number=version.version,
    )
    limit = runtime.settings.fhir_binary_json_max_bytes
    if version.size > limit:
        raise BinaryTooLargeForJson(
            f"This Binary is {version.size} bytes; its base64 FHIR form is served up to "
            f"{limit} bytes. Fetch the raw bytes instead: GET {raw_url} with "
            f"Accept: {version.content_type} (or */*). They support Range requests.",
            headers={"Link": f'<{raw_url}>; rel="alternate"; type="{version.content_type}"'},
        )
    # End the read transaction before touching storage (as the REST content route does).
    session.commit()
    plan = plan_content(
        runtime=runtime, version=version, range_header=None, if_none_match=None, if_range=None
    )
    audit.record(
        session=session,
        context=context,
        action="document.content.read",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={"version": version.version, "status": plan.status, "format": "fhir+json"},
    )
    head = dumps(metadata(version))[:-1] + b',"data":"'
    tail = b'"}'
    encoded = 4 * ((version.size + 2) // 3)

    def body() -> Iterator[bytes]:
        yield head
        if plan.body is not None:
            yield from _base64(plan.body)
        yield tail

    headers = {
        "ETag": weak_etag(BINARY_VERSION),
        "Last-Modified": plan.headers.get("Last-Modified", ""),
        "Content-Length": str(len(head) + encoded + len(tail)),
        "Cache-Control": "private, no-store",
    }
    return ResourceForm({k: v for k, v in headers.items() if v}, body())
