"""Resumable uploads from the portal: tus 1.0.0 under /upload/resumable.

The same protocol, answers and use cases as ``/api/v1/uploads`` (``uploads.http``),
with the portal's authentication: the session cookie, and
the session's CSRF token in a header on every request that changes something (the
page's tus client sends it with each request). Refusals are the portal's JSON problems,
in the visitor's language (``web.errors``), and carry the tus headers like the API's.

The page (``static/upload.js``) sends files from ``RESUMABLE_FROM_BYTES`` up this way,
in PATCHes of ``CHUNK_BYTES``; smaller files stay one request (``/upload/files``).
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request, Response

from medvault.auth.principal import Principal, Role
from medvault.deps import RateLimitsDep, RuntimeDep
from medvault.uploads import http
from medvault.uploads.http import (
    Caller,
    Face,
    TusResumable,
    TusRoute,
    UploadChecksum,
    UploadDeferLength,
    UploadLength,
    UploadMetadata,
    UploadOffset,
)
from medvault.uploads.protocol import parse_metadata
from medvault.web.session import CsrfChecked, PortalAuditCtx, PortalPrincipal

PREFIX = "/upload/resumable"
MiB = 1024 * 1024
# Files from this size go resumable. Below it one request is faster (no creation, no
# staged chunks read back at the end) and a lost connection costs little to redo.
RESUMABLE_FROM_BYTES = 4 * MiB
# Bytes per PATCH. At least the server's MERGE_BELOW (1 MiB: smaller chunks are
# rewritten with the next request's bytes), and small enough that a proxy that buffers
# or caps request bodies, or a connection that drops, costs little.
CHUNK_BYTES = 4 * MiB


def uploader_options() -> dict[str, Any]:
    """What a page's uploader needs to send large files resumably (its data attributes)."""
    return {"endpoint": PREFIX, "from_bytes": RESUMABLE_FROM_BYTES, "chunk_bytes": CHUNK_BYTES}


router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=TusRoute)
FACE = Face(uploads=PREFIX, documents="/documents")


def _own_record(principal: Principal, header: str | None) -> str | None:
    """A patient's new documents go to their own record, as with ``/upload/files``: the
    page names no patient, so the server does (another patient's id is the policy's)."""
    if principal.role is not Role.PATIENT or principal.patient_id is None:
        return header
    fields = parse_metadata(header)
    if "patient_id" in fields or "document_id" in fields:
        return header
    own = base64.b64encode(str(principal.patient_id).encode()).decode()
    return f"{header},patient_id {own}" if header and header.strip() else f"patient_id {own}"


@router.post("", status_code=201, response_class=Response)
async def create_upload(
    request: Request,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    limits: RateLimitsDep,
    _csrf: CsrfChecked,
    tus_resumable: TusResumable = None,
    upload_length: UploadLength = None,
    upload_defer_length: UploadDeferLength = None,
    upload_metadata: UploadMetadata = None,
    upload_checksum: UploadChecksum = None,
) -> Response:
    """Start a resumable upload (tus creation), as ``POST /api/v1/uploads`` does."""
    limits.hit_upload(actor_id=principal.actor_id)
    return await http.create(
        FACE,
        Caller(runtime, principal, context),
        request,
        tus_resumable=tus_resumable,
        upload_length=upload_length,
        upload_defer_length=upload_defer_length,
        upload_metadata=_own_record(principal, upload_metadata),
        upload_checksum=upload_checksum,
    )


@router.head("/{upload_id}", status_code=200, response_class=Response)
def upload_status(
    upload_id: str,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    tus_resumable: TusResumable = None,
) -> Response:
    """Where one of the visitor's uploads stands (reading it changes nothing: no CSRF)."""
    return http.status(
        FACE, Caller(runtime, principal, context), upload_id, tus_resumable=tus_resumable
    )


@router.patch("/{upload_id}", status_code=204, response_class=Response)
async def append_to_upload(
    upload_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
    tus_resumable: TusResumable = None,
    upload_offset: UploadOffset = None,
    upload_length: UploadLength = None,
    upload_checksum: UploadChecksum = None,
) -> Response:
    """Append bytes; the request that brings the last one stores the document."""
    return await http.append(
        FACE,
        Caller(runtime, principal, context),
        upload_id,
        request,
        tus_resumable=tus_resumable,
        upload_offset=upload_offset,
        upload_length=upload_length,
        upload_checksum=upload_checksum,
    )


@router.delete("/{upload_id}", status_code=204, response_class=Response)
def terminate_upload(
    upload_id: str,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
    tus_resumable: TusResumable = None,
) -> Response:
    """Cancel an upload (tus termination): what it received is deleted."""
    return http.terminate(
        Caller(runtime, principal, context), upload_id, tus_resumable=tus_resumable
    )
