"""Login sessions (``router``) and user administration (``admin_router``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.security import OAuth2PasswordRequestForm

from medvault.access.policy import Permission, require
from medvault.auth import sessions, users
from medvault.auth.principal import PrincipalKind, Role
from medvault.auth.schemas import (
    LogoutRequest,
    MeOut,
    RefreshRequest,
    TokenResponse,
    UserCreate,
    UserList,
    UserOut,
)
from medvault.auth.service import commit_with_audit
from medvault.deps import (
    AnonymousAuditCtx,
    AuditCtx,
    AuthReadSession,
    AuthSession,
    ClinicalSession,
    CurrentPrincipal,
    PrincipalIfValid,
    RateLimitsDep,
    RuntimeDep,
)
from medvault.kit.i18n import N_
from medvault.kit.ids import parse_id
from medvault.kit.problems import Unauthorized
from medvault.kit.text import require_clean_text

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
admin_router = APIRouter(prefix="/api/v1", tags=["admin"])

# RFC 6749 section 5.1: responses carrying tokens must not be cached anywhere.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _tokens(issued: sessions.IssuedSession, response: Response) -> TokenResponse:
    response.headers.update(_NO_STORE)
    return TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
    )


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={401: {"description": "Wrong credentials"}, 429: {"description": "Rate limited"}},
)
def issue_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    response: Response,
    runtime: RuntimeDep,
    reader: AuthReadSession,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    limits: RateLimitsDep,
    context: AnonymousAuditCtx,
) -> TokenResponse:
    """OAuth2 password grant: form fields `username`, `password`, `grant_type=password`."""
    # Before any lookup: PostgreSQL refuses a NUL in a query (a 500 that logged the name).
    require_clean_text([("username", form.username), ("password", form.password)])
    limits.hit_login(username=form.username, client_ip=context.client_ip)
    issued = sessions.login(
        reader=reader,
        auth_session=auth_session,
        clinical_session=clinical_session,
        key=runtime.jwt_key,
        settings=runtime.settings,
        username=form.username,
        password=form.password,
        context=context,
        password_slots=limits.password_slots,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    if issued is None:
        raise Unauthorized(N_("The username or password is wrong, or the account is disabled."))
    limits.login_succeeded(username=form.username)
    return _tokens(issued, response)


@router.post("/refresh", response_model=TokenResponse)
def refresh_token(
    body: RefreshRequest,
    response: Response,
    runtime: RuntimeDep,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    context: AnonymousAuditCtx,
) -> TokenResponse:
    """Swap a refresh token for a new pair. Each refresh token works exactly once."""
    issued = sessions.refresh(
        auth_session=auth_session,
        clinical_session=clinical_session,
        key=runtime.jwt_key,
        settings=runtime.settings,
        refresh_token=body.refresh_token,
        context=context,
    )
    # Also on refusal: a reused token's family revocation and its event must stick.
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    if issued is None:
        raise Unauthorized(N_("The refresh token is unknown, used, revoked or expired."))
    return _tokens(issued, response)


@router.post("/logout", status_code=204)
def logout(
    principal: PrincipalIfValid,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    context: AnonymousAuditCtx,
    body: LogoutRequest | None = None,
) -> Response:
    """End the current session (and the refresh token's, if one is sent)."""
    refresh = body.refresh_token if body else None
    if principal is None and not refresh:
        raise Unauthorized(N_("Send a valid access token, or the refresh token in the body."))
    sessions.logout(
        auth_session=auth_session,
        clinical_session=clinical_session,
        principal=principal,
        refresh_token=refresh,
        context=context,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    return Response(status_code=204)


@router.get("/me", response_model=MeOut)
def me(principal: CurrentPrincipal) -> MeOut:
    """Who the bearer token speaks for."""
    is_user = principal.kind is PrincipalKind.USER
    return MeOut(
        kind=principal.kind.value,
        id=principal.subject_id,
        role=principal.role.value,
        username=principal.name if is_user else None,
        patient_id=principal.patient_id,
        token_name=principal.name if principal.kind is PrincipalKind.API_TOKEN else None,
        scopes=sorted(principal.scopes),
    )


# -- administration ------------------------------------------------------------------


@admin_router.post("/users", status_code=201, response_model=UserOut, tags=["users"])
def create_user(
    data: UserCreate,
    principal: CurrentPrincipal,
    context: AuditCtx,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
    response: Response,
) -> UserOut:
    require(principal, Permission.USERS_ADMIN)
    user = users.create(
        auth_session=auth_session,
        clinical_session=clinical_session,
        username=data.username,
        email=data.email,
        password=data.password.get_secret_value(),
        role=Role(data.role),
        patient_id=data.patient_id,
        context=context,
        display_name=data.display_name,
        profession=data.profession,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    response.headers["Location"] = f"/api/v1/users/{user.id}"
    return UserOut.of(user)


@admin_router.get("/users", response_model=UserList, tags=["users"])
def list_users(
    principal: CurrentPrincipal,
    auth_session: AuthReadSession,
    role: Annotated[Role | None, Query()] = None,
) -> UserList:
    require(principal, Permission.USERS_ADMIN)
    return UserList(
        items=[UserOut.of(u) for u in users.list_users(session=auth_session, role=role)]
    )


@admin_router.get("/users/{user_id}", response_model=UserOut, tags=["users"])
def get_user(user_id: str, principal: CurrentPrincipal, auth_session: AuthReadSession) -> UserOut:
    require(principal, Permission.USERS_ADMIN)
    return UserOut.of(users.get(session=auth_session, user_id=parse_id(user_id)))


@admin_router.post("/users/{user_id}/disable", response_model=UserOut, tags=["users"])
def disable_user(
    user_id: str,
    principal: CurrentPrincipal,
    context: AuditCtx,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
) -> UserOut:
    """Lock the user out at once: their sessions end and access tokens stop working."""
    require(principal, Permission.USERS_ADMIN)
    user = users.disable(
        auth_session=auth_session,
        clinical_session=clinical_session,
        user_id=parse_id(user_id),
        context=context,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    return UserOut.of(user)


@admin_router.post("/users/{user_id}/enable", response_model=UserOut, tags=["users"])
def enable_user(
    user_id: str,
    principal: CurrentPrincipal,
    context: AuditCtx,
    auth_session: AuthSession,
    clinical_session: ClinicalSession,
) -> UserOut:
    require(principal, Permission.USERS_ADMIN)
    user = users.enable(
        auth_session=auth_session,
        clinical_session=clinical_session,
        user_id=parse_id(user_id),
        context=context,
    )
    commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    return UserOut.of(user)
