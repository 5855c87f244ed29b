"""tus 1.0.0 resumable uploads under /api/v1/uploads: the HTTP face, thin.

Every answer but OPTIONS carries ``Tus-Resumable`` (problems too: ``TusRoute``), and
no answer is cached: an upload's offset changes with every PATCH.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from medvault.deps import AuditCtx, CurrentPrincipal, RuntimeDep, UploadRateLimit
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
from medvault.uploads.protocol import CHECKSUM_ALGORITHMS, EXTENSIONS, TUS_VERSION

PREFIX = "/api/v1/uploads"


router = APIRouter(prefix=PREFIX, tags=["uploads"], route_class=TusRoute)
FACE = Face(uploads=PREFIX, documents="/api/v1/documents")

_PROGRESS_HEADERS = {
    "Upload-Offset": {"schema": {"type": "integer"}},
    "Upload-Expires": {"schema": {"type": "string"}},
}


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
    upload_length: UploadLength = None,
    upload_defer_length: UploadDeferLength = None,
    upload_metadata: UploadMetadata = None,
    upload_checksum: UploadChecksum = None,
) -> Response:
    """Start a resumable upload (tus creation). Upload-Metadata carries the document's
    fields as base64: `patient_id` and `document_type` (or `document_id` for a new
    version of that document), `title`, `description`, `classification`, `filename`,
    `on_duplicate`, and optionally `sha256` (hex), the whole file's hash, checked
    before the document is stored. With a body (creation-with-upload) its bytes are
    the first of the file."""
    return await http.create(
        FACE,
        Caller(runtime, principal, context),
        request,
        tus_resumable=tus_resumable,
        upload_length=upload_length,
        upload_defer_length=upload_defer_length,
        upload_metadata=upload_metadata,
        upload_checksum=upload_checksum,
    )


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
    context: AuditCtx,
    runtime: RuntimeDep,
    tus_resumable: TusResumable = None,
) -> Response:
    """Where an upload stands: its offset, length and metadata. Only its creator sees it."""
    return http.status(
        FACE, Caller(runtime, principal, context), upload_id, tus_resumable=tus_resumable
    )


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
    upload_offset: UploadOffset = None,
    upload_length: UploadLength = None,
    upload_checksum: UploadChecksum = None,
) -> Response:
    """Append bytes at Upload-Offset. The request that brings the last byte stores the
    document and answers with `Medvault-Document-Id`."""
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
    return http.terminate(
        Caller(runtime, principal, context), upload_id, tus_resumable=tus_resumable
    )
