"""FastAPI dependency aliases shared by every router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from medvault.audit.context import AuditContext
from medvault.auth import service as auth_service
from medvault.auth.principal import Principal
from medvault.kit.problems import Unauthorized
from medvault.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="An API token from `medvault token create`")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_clinical_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A clinical-database session; routes commit explicitly before responding."""
    with runtime.clinical.session() as session:
        yield session


ClinicalSession = Annotated[Session, Depends(get_clinical_session)]


def get_principal(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("Send an API token as 'Authorization: Bearer <token>'.")
    with runtime.auth.read_session() as session:
        principal = auth_service.authenticate_token(session=session, token=credentials.credentials)
    if principal is None:
        raise Unauthorized("The token is unknown, revoked or expired.")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def get_audit_context(request: Request, principal: CurrentPrincipal) -> AuditContext:
    return AuditContext.for_principal(
        principal,
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
    )


AuditCtx = Annotated[AuditContext, Depends(get_audit_context)]
