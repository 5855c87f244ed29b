"""The tus protocol's HTTP side, shared by its two faces: the API (``uploads.router``,
bearer tokens) and the portal (``web.pages.resumable``, the session and its CSRF token).

Each face authenticates in its own way and names its own URLs; what a request means,
and what is answered, is decided here once, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.deps import declared_length
from medvault.kit.i18n import N_
from medvault.kit.problems import ClientGone, Problem
from medvault.runtime import Runtime
from medvault.uploads import appending, service
from medvault.uploads.models import UploadStatus
from medvault.uploads.protocol import (
    PATCH_MEDIA_TYPE,
    TUS_VERSION,
    BadUploadHeader,
    WrongPatchType,
    check_version,
    http_date,
    parse_size,
)
from medvault.uploads.service import UploadView

# The tus request headers, declared once for both faces (the routes parse them).
TusResumable = Annotated[str | None, Header(alias="Tus-Resumable")]
UploadLength = Annotated[str | None, Header(alias="Upload-Length")]
UploadDeferLength = Annotated[str | None, Header(alias="Upload-Defer-Length")]
UploadMetadata = Annotated[str | None, Header(alias="Upload-Metadata")]
UploadChecksum = Annotated[str | None, Header(alias="Upload-Checksum")]
UploadOffset = Annotated[str | None, Header(alias="Upload-Offset")]


class TusRoute(APIRoute):
    """Adds the tus headers to every answer of the route, problems included, and keeps
    every answer out of caches: an upload's offset changes with every PATCH."""

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


@dataclass(frozen=True)
class Face:
    """Where a face's uploads and documents live."""

    uploads: str  # the uploads' collection, e.g. /api/v1/uploads
    documents: str  # a document's address, given its id

    def document_link(self, document_id: object) -> str:
        return f"{self.documents}/{document_id}"


@dataclass(frozen=True)
class Caller:
    runtime: Runtime
    principal: Principal
    context: AuditContext


def _progress(face: Face, response: Response, view: UploadView) -> Response:
    response.headers["Upload-Offset"] = str(view.offset)
    if view.status is UploadStatus.RECEIVING:
        response.headers["Upload-Expires"] = http_date(view.expires_at)
    if view.document_id is not None:
        response.headers["Medvault-Document-Id"] = str(view.document_id)
        response.headers["Link"] = f'<{face.document_link(view.document_id)}>; rel="related"'
    return response


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise ClientGone(N_("The client went away mid-request.")) from None


def _bytes_type(request: Request, *, required: bool) -> bool:
    """Whether the request carries bytes, refusing any type but tus's own."""
    content_type = request.headers.get("content-type")
    if content_type is None and not required:
        return False
    if (content_type or "").split(";")[0].strip() != PATCH_MEDIA_TYPE:
        raise WrongPatchType(
            N_("Bytes sent with a creation must be application/offset+octet-stream.")
            if not required
            else N_("PATCH bodies must be application/offset+octet-stream.")
        )
    return True


async def create(
    face: Face,
    caller: Caller,
    request: Request,
    *,
    tus_resumable: str | None,
    upload_length: str | None,
    upload_defer_length: str | None,
    upload_metadata: str | None,
    upload_checksum: str | None,
) -> Response:
    """tus creation, and creation-with-upload when the request carries bytes."""
    check_version(tus_resumable)
    if upload_defer_length is not None and upload_defer_length != "1":
        raise BadUploadHeader(N_("Upload-Defer-Length must be 1."))
    length = parse_size("Upload-Length", upload_length)
    with_bytes = _bytes_type(request, required=False)
    upload = service.create(
        runtime=caller.runtime,
        principal=caller.principal,
        context=caller.context,
        length=length,
        defer_length=upload_defer_length == "1",
        metadata_header=upload_metadata,
    )
    view = UploadView.of(upload)
    if with_bytes:
        view = await appending.append(
            runtime=caller.runtime,
            principal=caller.principal,
            context=caller.context,
            upload_id=str(upload.id),
            offset="0",
            length=None,
            checksum=upload_checksum,
            content_length=declared_length(request),
            body=_body(request),
        )
    created = Response(status_code=201, headers={"Location": f"{face.uploads}/{upload.id}"})
    return _progress(face, created, view)


def status(face: Face, caller: Caller, upload_id: str, *, tus_resumable: str | None) -> Response:
    """HEAD: where the upload stands, its length (or that it is deferred), its metadata."""
    check_version(tus_resumable)
    view = service.status(caller.runtime, caller.principal, caller.context, upload_id)
    response = _progress(face, Response(status_code=200), view)
    if view.length is None:
        response.headers["Upload-Defer-Length"] = "1"
    else:
        response.headers["Upload-Length"] = str(view.length)
    if view.metadata_header:
        response.headers["Upload-Metadata"] = view.metadata_header
    return response


async def append(
    face: Face,
    caller: Caller,
    upload_id: str,
    request: Request,
    *,
    tus_resumable: str | None,
    upload_offset: str | None,
    upload_length: str | None,
    upload_checksum: str | None,
) -> Response:
    """PATCH: the bytes at Upload-Offset; the request with the last one stores the document."""
    check_version(tus_resumable)
    _bytes_type(request, required=True)
    view = await appending.append(
        runtime=caller.runtime,
        principal=caller.principal,
        context=caller.context,
        upload_id=upload_id,
        offset=upload_offset,
        length=upload_length,
        checksum=upload_checksum,
        content_length=declared_length(request),
        body=_body(request),
    )
    return _progress(face, Response(status_code=204), view)


def terminate(caller: Caller, upload_id: str, *, tus_resumable: str | None) -> Response:
    check_version(tus_resumable)
    service.terminate(
        runtime=caller.runtime,
        principal=caller.principal,
        context=caller.context,
        upload_id=upload_id,
    )
    return Response(status_code=204)
