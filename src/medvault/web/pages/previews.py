"""Thumbnails and page previews in the portal: the REST preview use case, by session.

Read exactly like the REST ``GET .../preview`` (``documents.previewing``): the content
permission, the policy's reach, the scanner's verdict and one audit event per image.
A document without a preview gets the type icon from the page, not from here: this
route answers only with the picture or the problem.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from medvault.audit import service as audit
from medvault.deps import ClinicalSession, RuntimeDep
from medvault.documents import previewing
from medvault.documents.models import DerivedKind
from medvault.kit.ids import parse_id
from medvault.web.session import PortalAuditCtx, PortalPrincipal

router = APIRouter(include_in_schema=False)

_KINDS = {"thumbnail": DerivedKind.THUMBNAIL, "page": DerivedKind.PREVIEW}


@router.get("/documents/{document_id}/preview")
def preview(
    document_id: str,
    session: ClinicalSession,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    runtime: RuntimeDep,
    size: Literal["thumbnail", "page"] = "page",
    version: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    image = previewing.read_preview(
        runtime=runtime,
        session=session,
        context=context,
        principal=principal,
        document_id=parse_id(document_id),
        number=version,
        size=_KINDS[size],
    )
    audit.commit_or_refuse(session)
    return Response(
        content=image.data,
        media_type=image.media_type,
        headers={"ETag": image.etag, "Cache-Control": "private, no-store"},
    )
