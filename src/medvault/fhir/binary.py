"""Binary: one stored version's bytes, raw or as a FHIR resource with base64 data.

Both forms are read through the one content-reading use case (``documents.reading``),
as the REST content route is: authorise, audit before the first byte, stream, ranges,
integrity checks. The resource form streams too: the JSON is written around the
base64 of the plaintext as it is decrypted, so neither form ever holds a document in
memory. It is refused above a configurable size,
because base64 JSON of a large file is a poor way to move it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.denials import Denial, denied
from medvault.access.policy import Permission, require
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import reading
from medvault.documents import service as document_service
from medvault.documents.models import Document, DocumentVersion
from medvault.fhir import repository
from medvault.fhir.wire.media import dumps
from medvault.fhir.wire.outcome import BinaryTooLargeForJson
from medvault.fhir.wire.primitives import instant, weak_etag
from medvault.fhir.wire.references import uuid_or_404
from medvault.kit.problems import NotFound
from medvault.kit.read_conditions import ReadConditions
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


def _check_readable(
    session: Session, principal: Principal, version: DocumentVersion
) -> tuple[Document, DocumentVersion]:
    """The one content-read check (410 once deleted), answering exactly like a missing id."""
    try:
        return document_service.resolve_version(
            session=session,
            principal=principal,
            document_id=version.document_id,
            number=version.version,
        )
    except NotFound as exc:
        missing = NotFound("No Binary with this id.")
        missing.denial = exc.denial  # the refusal of a real record is still audited
        raise missing from None


def for_binary(
    principal: Principal, raw_id: str, *, details: Mapping[str, Any] | None = None
) -> reading.Authorise:
    """``Binary/{raw_id}`` as a content read (``documents.reading``) by ``principal``."""

    def authorise(session: Session) -> reading.ReadGrant:
        require(principal, Permission.CONTENT_READ)
        document, version = _check_readable(session, principal, locate(session, principal, raw_id))
        return reading.ReadGrant(document, version, details=details or {})

    return authorise


def readable(*, runtime: Runtime, principal: Principal, raw_id: str) -> DocumentVersion:
    """The version behind a Binary the caller may read, before its form is negotiated.

    The caller's reach comes first: nothing after it (406 for a format, the size cap)
    may tell an unreadable Binary apart from one that does not exist. The read itself
    authorises again, in ``documents.reading``.
    """
    with runtime.clinical.read_session() as session:
        return for_binary(principal, raw_id)(session).version


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
    runtime: Runtime,
    principal: Principal,
    version: DocumentVersion,
    context: AuditContext,
    raw_url: str,
) -> ResourceForm:
    """Read ``version`` as base64 JSON through the one reading use case (the route commits).

    Refused above the configured size, before any byte is read: base64 JSON of a large
    file is a poor way to move it, and the raw form serves it with Range requests.
    """
    limit = runtime.settings.fhir_binary_json_max_bytes
    if version.size > limit:
        raise BinaryTooLargeForJson(
            f"This Binary is {version.size} bytes; its base64 FHIR form is served up to "
            f"{limit} bytes. Fetch the raw bytes instead: GET {raw_url} with "
            f"Accept: {version.content_type} (or */*). They support Range requests.",
            headers={"Link": f'<{raw_url}>; rel="alternate"; type="{version.content_type}"'},
        )
    plan = reading.read_content(
        runtime=runtime,
        context=context,
        authorise=for_binary(principal, str(version.id), details={"format": "fhir+json"}),
        conditions=ReadConditions(),
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
