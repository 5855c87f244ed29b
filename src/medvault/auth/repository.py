"""Queries on the auth database."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, exists, func, select, update
from sqlalchemy.orm import Session

from medvault.auth.models import ApiToken, AuthEpoch, RefreshToken, User, WebSession


def token_by_hash(session: Session, token_hash: str) -> ApiToken | None:
    return session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def token_by_id(session: Session, token_id: uuid.UUID) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def tokens_by_ids(session: Session, token_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ApiToken]:
    """Many tokens in one query (for naming audit-event actors)."""
    wanted = set(token_ids)
    if not wanted:
        return {}
    rows = session.scalars(select(ApiToken).where(ApiToken.id.in_(wanted)))
    return {token.id: token for token in rows}


# -- users -----------------------------------------------------------------------------


def user_by_id(session: Session, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id)


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email))


def users_by_ids(session: Session, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, User]:
    wanted = set(user_ids)
    if not wanted:
        return {}
    return {user.id: user for user in session.scalars(select(User).where(User.id.in_(wanted)))}


def list_users(session: Session, *, role: str | None = None) -> list[User]:
    query = select(User).order_by(User.username)
    if role is not None:
        query = query.where(User.role == role)
    return list(session.scalars(query))


def any_user(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(User.id.is_not(None)))))


def count_active_admins(session: Session) -> int:
    query = select(func.count()).where(User.role == "admin", User.disabled_at.is_(None))
    return session.scalar(query.select_from(User)) or 0


def user_with_live_session(
    session: Session, user_id: uuid.UUID, family_id: uuid.UUID
) -> tuple[User, bool] | None:
    """The user and whether their login session is still live, in one round trip.

    Run on every request that carries an access token: a primary-key lookup plus an
    index probe on ``ix_refresh_tokens_family``, so disabling a user or revoking a
    session (logout, refresh-token theft) takes effect on the very next request.
    """
    live = (
        exists()
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .correlate(None)
    )
    row = session.execute(select(User, live.label("live")).where(User.id == user_id)).first()
    if row is None:
        return None
    return row[0], bool(row[1])


# -- refresh tokens --------------------------------------------------------------------


def refresh_token_by_hash(session: Session, token_hash: str) -> RefreshToken | None:
    return session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash))


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def mark_refresh_token_used(session: Session, token_id: uuid.UUID, now: datetime) -> bool:
    """Claim a refresh token for one rotation; False if it was already used or revoked.

    A conditional UPDATE rather than read-then-write: of two concurrent refreshes with
    the same token exactly one wins, on every engine, without row locks.
    """
    result = session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == token_id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def revoke_family(session: Session, family_id: uuid.UUID, now: datetime) -> int:
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def revoke_user_sessions(session: Session, user_id: uuid.UUID, now: datetime) -> int:
    """End every API login and portal session of a user; how many tokens and sessions."""
    tokens = session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    portal = session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(tokens) + _rowcount(portal)


# -- portal sessions ---------------------------------------------------------------------


def web_session_by_hash(session: Session, token_hash: str) -> tuple[WebSession, User] | None:
    row = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == token_hash)
    ).one_or_none()
    return (row[0], row[1]) if row else None


def touch_web_session(
    session: Session, session_id: uuid.UUID, *, now: datetime, idle_cutoff: datetime
) -> bool:
    """Record activity, unless the session ended or went idle meanwhile (then False)."""
    result = session.execute(
        update(WebSession)
        .where(
            WebSession.id == session_id,
            WebSession.revoked_at.is_(None),
            WebSession.last_seen_at > idle_cutoff,
        )
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def previous_visit_end(session: Session, user_id: uuid.UUID) -> datetime | None:
    """When this user was last active in any portal session so far (their last visit)."""
    return session.scalar(
        select(func.max(WebSession.last_seen_at)).where(WebSession.user_id == user_id)
    )


# -- the auth epoch (see auth.principal_cache) ---------------------------------------------

AUTH_EPOCH_ROW = 1
# A plain string, run on a bare autocommit connection: this is read on every request
# that carries a credential, so it skips the ORM and a transaction of its own.
# (The row id is written out: a constant, not a value from anywhere else.)
READ_AUTH_EPOCH_SQL = "SELECT value FROM auth_epoch WHERE id = 1"


def bump_auth_epoch(session: Session) -> None:
    """Move the epoch on, in the caller's transaction: cached principals die with its commit.

    Call it after the transaction's other auth writes. On PostgreSQL the UPDATE locks
    the one epoch row until commit; a transaction that takes that lock last and then
    writes nothing else in the auth database cannot be part of a lock cycle.
    """
    session.execute(
        update(AuthEpoch)
        .where(AuthEpoch.id == AUTH_EPOCH_ROW)
        .values(value=AuthEpoch.value + 1)
        .execution_options(synchronize_session=False)
    )
