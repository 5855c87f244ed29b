"""Previews over REST: a thumbnail or a page picture of a version, read like its content."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response

from medvault.audit import service as audit
from medvault.deps import AuditCtx, ClinicalSession, CurrentPrincipal, RuntimeDep
from medvault.documents import previewing
from medvault.documents.models import DerivedKind
from medvault.documents.schemas import MAX_DB_INT
from medvault.kit.ids import parse_id

router = APIRouter(prefix="/api/v1/documents", tags=["documents"])

Size = Annotated[
    Literal["thumbnail", "page"],
    Query(description="`thumbnail` fits 200 x 200 px (lists); `page` fits 1200 px (viewers)"),
]
_KINDS = {"thumbnail": DerivedKind.THUMBNAIL, "page": DerivedKind.PREVIEW}


def _answer(image: previewing.PreviewImage) -> Response:
    return Response(
        content=image.data,
        media_type=image.media_type,
        # Clinical content: never kept by a shared browser or proxy cache.
        headers={"ETag": image.etag, "Cache-Control": "private, no-store"},
    )


@router.get("/{document_id}/preview", response_class=Response)
def get_preview(
    document_id: str,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    size: Size = "page",
) -> Response:
    """A picture of the current version's first page (PDFs) or of the image itself.

    404 `preview-unavailable` while it is being made (with Retry-After), for types
    without previews, and when a limit stopped it (`reason` says which).
    """
    image = previewing.read_preview(
        runtime=runtime,
        session=session,
        context=context,
        principal=principal,
        document_id=parse_id(document_id),
        number=None,
        size=_KINDS[size],
    )
    audit.commit_or_refuse(session)
    return _answer(image)


@router.get("/{document_id}/versions/{number}/preview", response_class=Response)
def get_version_preview(
    document_id: str,
    number: Annotated[int, Path(ge=1, le=MAX_DB_INT)],
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    size: Size = "page",
) -> Response:
    """A picture of one version, like ``GET /{document_id}/preview``."""
    image = previewing.read_preview(
        runtime=runtime,
        session=session,
        context=context,
        principal=principal,
        document_id=parse_id(document_id),
        number=number,
        size=_KINDS[size],
    )
    audit.commit_or_refuse(session)
    return _answer(image)
