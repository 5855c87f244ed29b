"""tus 1.0.0 resumable uploads under /api/v1/uploads: the HTTP face, thin.

Every answer but OPTIONS carries ``Tus-Resumable`` (problems too: ``TusRoute``), and
no answer is cached: an upload's offset changes with every PATCH.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from medvault.deps import AuditCtx, CurrentPrincipal, RuntimeDep, UploadRateLimit
from medvault.kit.i18n import N_
from medvault.kit.problems import ClientGone, Problem
from medvault.uploads import appending, service
from medvault.uploads.models import UploadStatus
from medvault.uploads.protocol import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    PATCH_MEDIA_TYPE,
    TUS_VERSION,
    BadUploadHeader,
    WrongPatchType,
    check_version,
    http_date,
    parse_size,
)
from medvault.uploads.service import UploadView

PREFIX = "/api/v1/uploads"


class TusRoute(APIRoute):
    """Adds the tus headers to every answer of the route, problems included."""

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


router = APIRouter(prefix=PREFIX, tags=["uploads"], route_class=TusRoute)

TusResumable = Annotated[str | None, Header(alias="Tus-Resumable")]
_PROGRESS_HEADERS = {
    "Upload-Offset": {"schema": {"type": "integer"}},
    "Upload-Expires": {"schema": {"type": "string"}},
}


def _progress(response: Response, view: UploadView) -> None:
    response.headers["Upload-Offset"] = str(view.offset)
    if view.status is UploadStatus.RECEIVING:
        response.headers["Upload-Expires"] = http_date(view.expires_at)
    if view.document_id is not None:
        response.headers["Medvault-Document-Id"] = str(view.document_id)
        response.headers["Link"] = f'</api/v1/documents/{view.document_id}>; rel="related"'


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


@router.options("", status_code=204, response_class=Response)
def discover() -> Response:
    """What this tus server supports (no authentication: it says nothing about uploads)."""
    return Response(
        status_code=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        },
    )


@router.post(
    "",
    status_code=201,
    response_class=Response,
    responses={
        201: {"description": "Created; Location is the upload's URL", "headers": _PROGRESS_HEADERS},
    },
)
async def create_upload(
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    _rate: UploadRateLimit,
    tus_resumable: TusResumable = None,
    upload_length: Annotated[str | None, Header(alias="Upload-Length")] = None,
    upload_defer_length: Annotated[str | None, Header(alias="Upload-Defer-Length")] = None,
    upload_metadata: Annotated[str | None, Header(alias="Upload-Metadata")] = None,
    upload_checksum: Annotated[str | None, Header(alias="Upload-Checksum")] = None,
) -> Response:
    """Start a resumable upload (tus creation). Upload-Metadata carries the document's
    fields as base64: `patient_id` and `document_type` (or `document_id` for a new
    version of that document), `title`, `description`, `classification`, `filename`,
    `on_duplicate`, and optionally `sha256` (hex), the whole file's hash, checked
    before the document is stored. With a body (creation-with-upload) its bytes are
    the first of the file."""
    check_version(tus_resumable)
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
        metadata_header=upload_metadata,
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


@router.head(
    "/{upload_id}",
    status_code=200,
    response_class=Response,
    responses={
        200: {"description": "Where the upload stands", "headers": _PROGRESS_HEADERS},
    },
)
def upload_status(
    upload_id: str,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
    tus_resumable: TusResumable = None,
) -> Response:
    """Where an upload stands: its offset, length and metadata. Only its creator sees it."""
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


@router.patch(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    responses={
        204: {
            "description": "Bytes appended; Upload-Offset is the new offset",
            "headers": _PROGRESS_HEADERS,
        },
    },
)
async def append_to_upload(
    upload_id: str,
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    tus_resumable: TusResumable = None,
    upload_offset: Annotated[str | None, Header(alias="Upload-Offset")] = None,
    upload_length: Annotated[str | None, Header(alias="Upload-Length")] = None,
    upload_checksum: Annotated[str | None, Header(alias="Upload-Checksum")] = None,
) -> Response:
    """Append bytes at Upload-Offset. The request that brings the last byte stores the
    document and answers with `Medvault-Document-Id`."""
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


@router.delete(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    responses={},
)
def terminate_upload(
    upload_id: str,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    tus_resumable: TusResumable = None,
) -> Response:
    """End an upload (tus termination): what it received is deleted. A finished upload's
    document is not: delete that through the documents API."""
    check_version(tus_resumable)
    service.terminate(runtime=runtime, principal=principal, context=context, upload_id=upload_id)
    return Response(status_code=204)
