"""Resumable uploads from the portal: tus 1.0.0 under /upload/resumable.

The same protocol and the same use cases as ``/api/v1/uploads`` (``uploads.service``
and ``uploads.appending``), with the portal's authentication: the session cookie, and
the session's CSRF token in a header on every request that changes something (the
page's tus client sends it with each request). Refusals are the portal's JSON problems,
in the visitor's language (``web.errors``), and carry the tus headers like the API's.

The page (``static/upload.js``) sends files from ``RESUMABLE_FROM_BYTES`` up this way,
in PATCHes of ``CHUNK_BYTES``; smaller files stay one request (``/upload/files``).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from medvault.auth.principal import Principal, Role
from medvault.deps import RateLimitsDep, RuntimeDep
from medvault.kit.i18n import N_
from medvault.kit.problems import ClientGone, Problem
from medvault.uploads import appending, service
from medvault.uploads.models import UploadStatus
from medvault.uploads.protocol import (
    PATCH_MEDIA_TYPE,
    TUS_VERSION,
    BadUploadHeader,
    WrongPatchType,
    check_version,
    http_date,
    parse_metadata,
    parse_size,
)
from medvault.uploads.service import UploadView
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


class _TusAnswers(APIRoute):
    """Adds the tus headers to every answer of the route, problems included (as the API's
    ``uploads.router.TusRoute``: a route does not import another face's router)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except Problem as problem:
                problem.headers.setdefault("Tus-Resumable", TUS_VERSION)
                problem.headers.setdefault("Cache-Control", "no-store")
                raise
            response.headers["Tus-Resumable"] = TUS_VERSION
            response.headers["Cache-Control"] = "no-store"
            return response

        return tus_handler


router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=_TusAnswers)

TusResumable = Annotated[str | None, Header(alias="Tus-Resumable")]


def _progress(response: Response, view: UploadView) -> None:
    response.headers["Upload-Offset"] = str(view.offset)
    if view.status is UploadStatus.RECEIVING:
        response.headers["Upload-Expires"] = http_date(view.expires_at)
    if view.document_id is not None:
        response.headers["Medvault-Document-Id"] = str(view.document_id)
        response.headers["Link"] = f'</documents/{view.document_id}>; rel="related"'


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise ClientGone(N_("The client went away mid-request.")) from None


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    return int(raw) if raw and raw.isdigit() else None


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
    upload_length: Annotated[str | None, Header(alias="Upload-Length")] = None,
    upload_defer_length: Annotated[str | None, Header(alias="Upload-Defer-Length")] = None,
    upload_metadata: Annotated[str | None, Header(alias="Upload-Metadata")] = None,
    upload_checksum: Annotated[str | None, Header(alias="Upload-Checksum")] = None,
) -> Response:
    """Start a resumable upload (tus creation), as ``POST /api/v1/uploads`` does."""
    check_version(tus_resumable)
    limits.hit_upload(actor_id=principal.actor_id)
    if upload_defer_length is not None and upload_defer_length != "1":
        raise BadUploadHeader(N_("Upload-Defer-Length must be 1."))
    length = parse_size("Upload-Length", upload_length)
    content_type = request.headers.get("content-type")
    if content_type is not None and content_type.split(";")[0].strip() != PATCH_MEDIA_TYPE:
        raise WrongPatchType(
            N_("Bytes sent with a creation must be application/offset+octet-stream.")
        )
    upload = service.create(
        runtime=runtime,
        principal=principal,
        context=context,
        length=length,
        defer_length=upload_defer_length == "1",
        metadata_header=_own_record(principal, upload_metadata),
    )
    response = Response(status_code=201, headers={"Location": f"{PREFIX}/{upload.id}"})
    view = UploadView.of(upload)
    if content_type is not None:
        view = await appending.append(
            runtime=runtime,
            principal=principal,
            context=context,
            upload_id=str(upload.id),
            offset="0",
            length=None,
            checksum=upload_checksum,
            content_length=_content_length(request),
            body=_body(request),
        )
    _progress(response, view)
    return response


@router.head("/{upload_id}", status_code=200, response_class=Response)
def upload_status(
    upload_id: str,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    tus_resumable: TusResumable = None,
) -> Response:
    """Where one of the visitor's uploads stands (reading it changes nothing: no CSRF)."""
    check_version(tus_resumable)
    view = service.status(runtime, principal, upload_id)
    response = Response(status_code=200)
    _progress(response, view)
    if view.length is None:
        response.headers["Upload-Defer-Length"] = "1"
    else:
        response.headers["Upload-Length"] = str(view.length)
    if view.metadata_header:
        response.headers["Upload-Metadata"] = view.metadata_header
    return response


@router.patch("/{upload_id}", status_code=204, response_class=Response)
async def append_to_upload(
    upload_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
    tus_resumable: TusResumable = None,
    upload_offset: Annotated[str | None, Header(alias="Upload-Offset")] = None,
    upload_length: Annotated[str | None, Header(alias="Upload-Length")] = None,
    upload_checksum: Annotated[str | None, Header(alias="Upload-Checksum")] = None,
) -> Response:
    """Append bytes; the request that brings the last one stores the document."""
    check_version(tus_resumable)
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip() != PATCH_MEDIA_TYPE:
        raise WrongPatchType(N_("PATCH bodies must be application/offset+octet-stream."))
    view = await appending.append(
        runtime=runtime,
        principal=principal,
        context=context,
        upload_id=upload_id,
        offset=upload_offset,
        length=upload_length,
        checksum=upload_checksum,
        content_length=_content_length(request),
        body=_body(request),
    )
    response = Response(status_code=204)
    _progress(response, view)
    return response


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
    check_version(tus_resumable)
    service.terminate(runtime=runtime, principal=principal, context=context, upload_id=upload_id)
    return Response(status_code=204)
