"""FastAPI dependency aliases shared by every router."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from medvault.access.break_glass import HEADER as BREAK_GLASS_HEADER
from medvault.access.break_glass import apply_break_glass
from medvault.access.replica_check import replica_check
from medvault.audit.context import AuditContext
from medvault.auth import service as auth_service
from medvault.auth.principal import Principal
from medvault.auth.ratelimit import RateLimits
from medvault.kit.problems import Unauthorized
from medvault.ops.read_fences import request_fence
from medvault.runtime import Runtime

_bearer = HTTPBearer(
    auto_error=False,
    description="An access token from POST /api/v1/auth/token, "
    "or an API token from `medvault token create`",
)
_rate_limits_lock = threading.Lock()


def declared_length(request: Request) -> int | None:
    """The body's length as the client declared it (Content-Length), if it did."""
    raw = request.headers.get("content-length")
    return int(raw) if raw and raw.isdigit() else None


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_clinical_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A clinical-database session; routes commit explicitly before responding."""
    with runtime.clinical.session() as session:
        yield session


ClinicalSession = Annotated[Session, Depends(get_clinical_session)]


def get_auth_session(runtime: RuntimeDep) -> Iterator[Session]:
    """An auth-database session for changes; routes commit it after the clinical one."""
    with runtime.auth.session() as session:
        yield session


AuthSession = Annotated[Session, Depends(get_auth_session)]


def get_auth_read_session(runtime: RuntimeDep) -> Iterator[Session]:
    """An auth-database session for lookups only (takes no write lock on SQLite)."""
    with runtime.auth.read_session() as session:
        yield session


AuthReadSession = Annotated[Session, Depends(get_auth_read_session)]


def get_patient_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A patient-database session for changes to demographics; routes commit it after
    the clinical one that holds their audit event (``patients.service.commit_with_audit``).
    Reading needs none: clinical sessions read ``Patient`` from the patient database."""
    with runtime.patients.session() as session:
        yield session


PatientSession = Annotated[Session, Depends(get_patient_session)]


def _resolve_bearer(runtime: Runtime, token: str) -> Principal | None:
    # Through the principal cache: no auth-database session when the caller was
    # resolved a moment ago and nothing was revoked since (auth.principal_cache).
    return auth_service.resolve_bearer(
        cache=runtime.principals.bearer,
        read_session=runtime.auth.read_session,
        jwt_key=runtime.jwt_key,
        token=token,
    )


def _authenticate(runtime: Runtime, token: str) -> Principal:
    principal = _resolve_bearer(runtime, token)
    if principal is None:
        raise Unauthorized("The token is unknown, revoked, expired or not for this vault.")
    return principal


def get_principal(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    break_glass_reason: Annotated[
        str | None,
        Header(
            alias=BREAK_GLASS_HEADER,
            description="Emergency access beyond your care team: why (audited)",
        ),
    ] = None,
) -> Principal:
    if credentials is None:
        raise Unauthorized("Send an access or API token as 'Authorization: Bearer <token>'.")
    return apply_break_glass(_authenticate(runtime, credentials.credentials), break_glass_reason)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def get_optional_principal(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """None without credentials; a bad token is still a 401, never silently anonymous."""
    if credentials is None:
        return None
    return _authenticate(runtime, credentials.credentials)


OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]


def get_principal_if_valid(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """None for a missing *or invalid* token. Only for logout: a stale access token
    must not stop the refresh token in the same request from ending its session."""
    if credentials is None:
        return None
    return _resolve_bearer(runtime, credentials.credentials)


PrincipalIfValid = Annotated[Principal | None, Depends(get_principal_if_valid)]


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


def get_clinical_replica_session(
    request: Request, runtime: RuntimeDep, principal: CurrentPrincipal
) -> Iterator[Session]:
    """For lists, searches, metadata and audit queries: reads from the replica when the
    rule allows (db.replica), writes (the audit event) to the primary; one commit."""
    replica = runtime.clinical_replica
    if replica is None:
        with runtime.clinical.session() as session:
            yield session
        return
    with replica.read_session(
        fence=request_fence(request), check=replica_check(principal)
    ) as routed:
        yield routed


ClinicalReplicaSession = Annotated[Session, Depends(get_clinical_replica_session)]


def get_anonymous_audit_context(request: Request) -> AuditContext:
    """For requests made before anyone is authenticated (login, refresh, logout)."""
    return AuditContext(
        actor_id="anonymous",
        actor_role="anonymous",
        client_ip=client_ip(request),
        user_agent=(request.headers.get("user-agent") or "")[:512] or None,
        request_id=getattr(request.state, "request_id", None),
    )


AnonymousAuditCtx = Annotated[AuditContext, Depends(get_anonymous_audit_context)]


def get_rate_limits(request: Request, runtime: RuntimeDep) -> RateLimits:
    """The app's rate limiter, made on first use (set ``app.state.rate_limits`` to replace)."""
    state = request.app.state
    limits: RateLimits | None = getattr(state, "rate_limits", None)
    if limits is None:
        with _rate_limits_lock:
            limits = getattr(state, "rate_limits", None)
            if limits is None:
                limits = RateLimits.from_settings(runtime.settings)
                state.rate_limits = limits
    return limits


RateLimitsDep = Annotated[RateLimits, Depends(get_rate_limits)]


def limit_uploads(principal: CurrentPrincipal, limits: RateLimitsDep) -> None:
    """Count an upload against the caller's limit; 429 with Retry-After once over it."""
    limits.hit_upload(actor_id=principal.actor_id)


# Add as a parameter of each upload route: ``_: UploadRateLimit``.
UploadRateLimit = Annotated[None, Depends(limit_uploads)]
