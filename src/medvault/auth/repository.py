"""Queries on the auth database."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from medvault.auth.models import ApiToken


def token_by_hash(session: Session, token_hash: str) -> ApiToken | None:
    return session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))
