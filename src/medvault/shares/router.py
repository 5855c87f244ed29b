"""Signed download links: issuing one (signed in), and downloading with one (no token)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from medvault.access.policy import Permission, require
from medvault.audit.context import AuditContext
from medvault.deps import AuditCtx, ClinicalSession, CurrentPrincipal, RuntimeDep, client_ip
from medvault.documents import reading
from medvault.documents.http_content import Conditions, streamed
from medvault.documents.schemas import DownloadUrlOut, DownloadUrlRequest
from medvault.kit.ids import parse_id
from medvault.shares import service as shares
from medvault.shares.signed_urls import verify

# Tagged "documents" as before, so generated clients keep these operations in place.
router = APIRouter(prefix="/api/v1", tags=["documents"])


@router.post(
    "/documents/{document_id}/download-url", response_model=DownloadUrlOut, status_code=201
)
def create_download_url(
    document_id: str,
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    body: DownloadUrlRequest | None = None,
) -> DownloadUrlOut:
    """A link that downloads one version without a token, until it expires (default 1 h)."""
    require(principal, Permission.CONTENT_READ)
    issued = shares.issue(
        session=session,
        runtime=runtime,
        principal=principal,
        document_id=parse_id(document_id),
        request=body or DownloadUrlRequest(),
        base_url=runtime.settings.public_url or str(request.base_url),
        context=context,
    )
    session.commit()
    return issued


@router.get("/download/{token}", response_class=StreamingResponse)
def download_with_link(
    token: str,
    request: Request,
    runtime: RuntimeDep,
    conditions: Conditions,
) -> Response:
    """Download the one version a signed link names, until the link expires."""
    grant = verify(secret=runtime.secret_key, token=token)
    context = AuditContext(
        actor_id=f"signed_url:{grant.link_id}",
        actor_role="link",
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
    )
    plan = reading.read_content(
        runtime=runtime,
        context=context,
        authorise=shares.for_link(runtime=runtime, token=token, context=context),
        conditions=conditions,
    )
    return streamed(plan)
