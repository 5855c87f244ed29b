"""Redeeming signed download links: no bearer token, the signature is the credential."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.deps import ClinicalSession, RuntimeDep, client_ip
from medvault.documents.content import plan_content
from medvault.documents.router import plan_response
from medvault.shares import service as shares
from medvault.shares.signed_urls import verify

router = APIRouter(prefix="/api/v1/download", tags=["documents"])


@router.get("/{token}", response_class=StreamingResponse)
def download_with_link(
    token: str,
    request: Request,
    session: ClinicalSession,
    runtime: RuntimeDep,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
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
    document, version, grant = shares.redeem(
        session=session, runtime=runtime, token=token, context=context
    )
    session.commit()  # release SQLite's write lock before touching storage (see documents)
    plan = plan_content(
        runtime=runtime,
        version=version,
        range_header=range_header,
        if_none_match=if_none_match,
        if_range=if_range,
    )
    shares.record_use(
        session=session, document=document, version=version, grant=grant, context=context
    )
    audit.commit_or_refuse(session)
    return plan_response(plan)
