"""Issuing and checking bearer credentials: API tokens and (via sessions) access tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from medvault.access import smart_scopes
from medvault.access.policy import Permission
from medvault.audit import service as audit
from medvault.auth import repository
from medvault.auth.models import ApiToken
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.auth.sessions import authenticate_access_token
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
    if not looks_like_token(token):
        return None
    row = repository.token_by_hash(session, hash_token(token))
    if row is None or row.revoked_at is not None:
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
    return True


def authenticate_bearer(*, session: Session, jwt_key: SigningKey, token: str) -> Principal | None:
    """The principal for an API token (``mvt_…``) or a JWT access token, else None."""
    if looks_like_token(token):
        return authenticate_token(session=session, token=token)
    return authenticate_access_token(session=session, key=jwt_key, token=token)


def commit_with_audit(*, auth_session: Session, clinical_session: Session) -> None:
    """Commit an auth-database change after the clinical transaction holding its event.

    The two databases share no transaction. Committing the audit event first means a
    crash in between leaves an event for a change that did not happen, never a change
    that nobody recorded. If the audit commit fails, nothing is committed (503).
    """
    audit.commit_or_refuse(clinical_session)
    auth_session.commit()
