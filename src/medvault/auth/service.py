"""Issuing and checking API tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from medvault.auth import repository
from medvault.auth.models import ApiToken
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.auth.tokens import hash_token, looks_like_token, new_token
from medvault.kit.clock import utcnow

FULL_ACCESS_SCOPES = ("*",)


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
) -> IssuedToken:
    """Create a token; the plaintext is returned once and never stored."""
    name = name.strip()
    if not 0 < len(name) <= 100:
        raise ValueError("token name must be 1 to 100 characters")
    token = new_token()
    row = ApiToken(
        name=name,
        token_hash=hash_token(token),
        role=role.value,
        scopes=list(scopes),
        created_at=utcnow(),
        expires_at=expires_at,
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
    return Principal(
        kind=PrincipalKind.API_TOKEN,
        subject_id=row.id,
        name=row.name,
        role=Role(row.role),
        scopes=frozenset(row.scopes),
    )
