"""A patient's own export over HTTP: request it, follow it, download it once."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from medvault.deps import (
    AnonymousAuditCtx,
    AuditCtx,
    ClinicalSession,
    CurrentPrincipal,
    RuntimeDep,
)
from medvault.documents.content import content_disposition
from medvault.governance import exports
from medvault.governance.exports import ExportOut, ExportRequest
from medvault.kit.ids import parse_id

router = APIRouter(prefix="/api/v1", tags=["exports"])
ZIP = "application/zip"


@router.post("/patients/{patient_id}/exports", status_code=202, response_model=ExportOut)
def request_export(
    patient_id: str,
    body: ExportRequest,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    response: Response,
) -> ExportOut:
    """Everything held about the patient, as one encrypted archive built in the background."""
    queued = exports.request(session, runtime, principal, context, parse_id(patient_id), body)
    session.commit()
    response.headers["Location"] = f"/api/v1/exports/{queued.id}"
    return queued


@router.get("/exports/{export_id}", response_model=ExportOut)
def export_status(
    export_id: str,
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
) -> ExportOut:
    """Where it stands; once `ready`, the one-time `download_url` (the requester's only)."""
    found = exports.status(
        session,
        runtime,
        principal,
        context,
        parse_id(export_id),
        base_url=runtime.settings.public_url or str(request.base_url),
    )
    session.commit()
    return found


@router.get("/exports/download/{token}", response_class=StreamingResponse)
def download_export(token: str, runtime: RuntimeDep, context: AnonymousAuditCtx) -> Response:
    """The archive (AES-256 ZIP under the requester's passphrase), once; then 410."""
    export = exports.claim_download(runtime, token, context)
    name = f"medvault-export-{export.created_at:%Y%m%d}.zip"
    return StreamingResponse(
        exports.archive_bytes(runtime, export),
        media_type=ZIP,
        headers={
            "Content-Length": str(export.size),
            "Content-Disposition": content_disposition(name),
            "Cache-Control": "private, no-store",
            "Repr-Digest": f"sha-256=:{_b64(export.sha256 or '')}:",
        },
    )


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()
