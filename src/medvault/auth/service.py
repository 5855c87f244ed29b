"""Issuing and checking bearer credentials: API tokens and (via sessions) access tokens."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from medvault.access import smart_scopes
from medvault.access.policy import Permission
from medvault.audit import service as audit
from medvault.auth import repository
from medvault.auth.models import ApiToken
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.auth.principal_cache import Expiring, PrincipalCache, credential_key
from medvault.auth.sessions import access_token_principal
from medvault.auth.tokens import hash_token, looks_like_token, new_token
from medvault.crypto.signing_keys import SigningKey
from medvault.kit.clock import utcnow

FULL_ACCESS_SCOPES = ("*",)
KNOWN_SCOPES = frozenset({"*"} | {permission.value for permission in Permission})


@dataclass(frozen=True)
class IssuedToken:
    id: uuid.UUID
    name: str
    token: str


def create_api_token(
    *,
    session: Session,
    name: str,
    role: Role = Role.SERVICE,
    scopes: tuple[str, ...] = FULL_ACCESS_SCOPES,
    expires_at: datetime | None = None,
    user_id: uuid.UUID | None = None,
) -> IssuedToken:
    """Create a token; the plaintext is returned once and never stored.

    ``scopes`` are permission names (``documents:read``…), ``*``, or SMART scopes
    (``user/DocumentReference.read``…, see ``access.smart_scopes``); an unknown one is
    refused rather than silently granting nothing. A token with ``user_id`` dies with
    that user's account (disabled or deleted), and a patient user's token has that
    patient in context for ``patient/…`` scopes.
    """
    name = name.strip()
    if not 0 < len(name) <= 100:
        raise ValueError("token name must be 1 to 100 characters")
    unknown = sorted(
        scope
        for scope in set(scopes) - KNOWN_SCOPES
        if not smart_scopes.looks_like_smart_scope(scope)
    )
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(unknown)}")
    for scope in scopes:
        if smart_scopes.looks_like_smart_scope(scope):
            smart_scopes.validate(scope)  # InvalidScope is a ValueError that says why
    if expires_at is not None and expires_at <= utcnow():
        raise ValueError("the expiry is in the past")
    token = new_token()
    row = ApiToken(
        name=name,
        token_hash=hash_token(token),
        role=role.value,
        scopes=list(scopes),
        created_at=utcnow(),
        expires_at=expires_at,
        user_id=user_id,
    )
    session.add(row)
    session.flush()
    return IssuedToken(id=row.id, name=row.name, token=token)


def authenticate_token(*, session: Session, token: str) -> Principal | None:
    """The principal for a live token, or None (unknown, revoked or expired)."""
    found = api_token_principal(session=session, token=token)
    return found.value if found is not None else None


def token_principal(session: Session, row: ApiToken) -> Principal | None:
    """The principal a stored token stands for now; None once revoked, expired, or its
    owner disabled. The one rule for presented tokens and for stored identities (a bulk
    export resolves its requester again when it runs)."""
    if row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    patient_id = None
    if row.user_id is not None:
        owner = repository.user_by_id(session, row.user_id)
        if owner is None or owner.disabled_at is not None:
            return None
        # The patient in context for SMART patient/ scopes; nothing else reads it for
        # API tokens, so a token's reach only narrows when such a scope asks for it.
        patient_id = owner.patient_id
    return Principal(
        kind=PrincipalKind.API_TOKEN,
        subject_id=row.id,
        name=row.name,
        role=Role(row.role),
        scopes=frozenset(row.scopes),
        patient_id=patient_id,
    )


def api_token_principal(*, session: Session, token: str) -> Expiring[Principal] | None:
    """As :func:`authenticate_token`, with the instant the token expires (None: never)."""
    if not looks_like_token(token):
        return None
    row = repository.token_by_hash(session, hash_token(token))
    if row is None:
        return None
    principal = token_principal(session, row)
    if principal is None:
        return None
    return Expiring(principal, row.expires_at)


def list_api_tokens(*, session: Session) -> list[ApiToken]:
    """Every API token (hashes only), oldest first."""
    return repository.list_tokens(session)


def revoke_api_token(*, session: Session, token_id: uuid.UUID) -> bool:
    """Revoke a token from its next request on; False if no such token."""
    row = repository.token_by_id(session, token_id)
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        repository.bump_auth_epoch(session)  # cached principals of this token die at commit
    return True


def authenticate_bearer(*, session: Session, jwt_key: SigningKey, token: str) -> Principal | None:
    """The principal for an API token (``mvt_…``) or a JWT access token, else None."""
    found = _bearer_principal(session=session, jwt_key=jwt_key, token=token)
    return found.value if found is not None else None


def _bearer_principal(
    *, session: Session, jwt_key: SigningKey, token: str
) -> Expiring[Principal] | None:
    if looks_like_token(token):
        return api_token_principal(session=session, token=token)
    return access_token_principal(session=session, key=jwt_key, token=token)


def resolve_bearer(
    *,
    cache: PrincipalCache[Principal],
    read_session: Callable[[], AbstractContextManager[Session]],
    jwt_key: SigningKey,
    token: str,
) -> Principal | None:
    """:func:`authenticate_bearer` through the process's principal cache.

    A hit opens no session and skips the JWT signature check: its key is the digest of
    these exact token bytes, which were verified when the entry was made. The session
    is opened only on a miss (see ``auth.principal_cache`` for why a hit is safe).
    """

    def load() -> Expiring[Principal] | None:
        with read_session() as session:
            return _bearer_principal(session=session, jwt_key=jwt_key, token=token)

    return cache.resolve(credential_key("bearer", token), load)


def commit_with_audit(*, auth_session: Session, clinical_session: Session) -> None:
    """Commit an auth-database change after the clinical transaction holding its event.

    The two databases share no transaction. Committing the audit event first means a
    crash in between leaves an event for a change that did not happen, never a change
    that nobody recorded. If the audit commit fails, nothing is committed (503).
    """
    audit.commit_or_refuse(clinical_session)
    auth_session.commit()
