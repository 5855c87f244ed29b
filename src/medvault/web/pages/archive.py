"""Downloading the documents ticked in a list as one ZIP (``documents.archive``)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from medvault.access.policy import Permission, require
from medvault.deps import RuntimeDep
from medvault.documents import archive
from medvault.documents.content import content_disposition
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_, msg
from medvault.kit.problems import ValidationFailed
from medvault.web.session import (
    CsrfChecked,
    PortalAuditCtx,
    PortalPrincipal,
    form_data,
    viewer_zone,
)

router = APIRouter(include_in_schema=False)


@router.post("/documents/archive")
async def download_archive(
    request: Request,
    runtime: RuntimeDep,
    principal: PortalPrincipal,
    context: PortalAuditCtx,
    _csrf: CsrfChecked,
) -> Response:
    """A POST, so the ids never reach a URL, a log line or the browser's history."""
    require(principal, Permission.CONTENT_READ)
    await form_data(request)  # the portal's one rule on control characters
    chosen = list((await request.form()).getlist("document_id"))
    if not chosen:
        raise ValidationFailed(N_("Tick the documents to download first."))
    if len(chosen) > archive.MAX_DOCUMENTS:
        raise ValidationFailed(
            msg(
                "Choose at most {limit} documents for one download.",
                limit=archive.MAX_DOCUMENTS,
            )
        )
    try:
        ids = [uuid.UUID(str(value)) for value in chosen]
    except ValueError:
        raise ValidationFailed(N_("A ticked document is not a document id.")) from None
    now = utcnow()
    zone = viewer_zone(request)
    name = f"documents-{now.astimezone(zone):%Y-%m-%d-%H%M}.zip"
    return StreamingResponse(
        archive.stream(
            runtime=runtime,
            principal=principal,
            context=context,
            document_ids=ids,
            zone=zone,
            now=now,
        ),
        media_type="application/zip",
        headers={"Content-Disposition": content_disposition(name), "Cache-Control": "no-store"},
    )
