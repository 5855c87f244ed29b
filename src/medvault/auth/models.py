"""Credentials in the auth database. Only hashes of tokens are ever stored."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import AuthBase
from medvault.db.types import UTCDateTime


class ApiToken(AuthBase):
    """A bearer token for a service account (scripts, integrations, the CLI)."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class User(AuthBase):
    """A person who logs in. A patient user is linked to exactly one patient record."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    patient_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What people read instead of the username ("Dr Priya Patel", "GP"), set by admins.
    display_name: Mapped[str | None] = mapped_column(String(100))
    profession: Mapped[str | None] = mapped_column(String(100))
    # The IANA zone the portal shows times in ("Europe/London"), taken from the browser
    # at each portal login; None until then (the portal's default zone applies).
    time_zone: Mapped[str | None] = mapped_column(String(64))
    # The portal language this user chose ("cy"), on any device; None: never chosen
    # (the browser's languages decide, then the portal's default).
    language: Mapped[str | None] = mapped_column(String(8))

    @property
    def label(self) -> str:
        """How people see this user: "Dr Priya Patel, GP", "Dr Priya Patel", or the username."""
        if self.display_name and self.profession:
            return f"{self.display_name}, {self.profession}"
        return self.display_name or self.username


class RefreshToken(AuthBase):
    """One link in a rotating refresh-token chain (a "family" per login).

    Each token works once. Presenting a used one means it was stolen or replayed, and
    the whole family is revoked.
    """

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index("ix_refresh_tokens_family", "family_id"),
        # Disabling a user or changing a password revokes all of that user's sessions.
        Index("ix_refresh_tokens_user", "user_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebSession(AuthBase):
    """A portal login: the browser holds a random cookie, the row holds its hash.

    Kept in the database, not in the cookie, so any instance can serve any request
    and a logout, an idle timeout or a disabled account ends the session everywhere
    at once. Break-glass is a property of the session, with its own expiry.
    """

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_user", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    break_glass_reason: Mapped[str | None] = mapped_column(String(500))
    break_glass_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the user's previous visit ended (their other sessions' last activity), set at
    # login: "New" badges need it on every page, and it must cost no query there.
    previous_visit_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuthEpoch(AuthBase):
    """One row whose counter moves with every change that can narrow a live credential.

    Revoking a token or a session, disabling a user, changing a password, starting or
    ending break-glass: each bumps ``value`` in the same transaction as the change. A
    principal cached by any instance (``auth.principal_cache``) is served only while
    the counter still reads what it read before the principal was looked up, so the
    change takes effect on the very next request everywhere, with no time window.
    """

    __tablename__ = "auth_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class WebSessionView(AuthBase):
    """A portal list's filters, kept server-side behind an opaque id (``/documents?view=…``).

    Search words and filters are clinical information, so they never travel in a URL,
    a log line or the browser's history; the URL carries only ``id``, which is random
    and useless outside its own session. ``state`` is encrypted (see
    ``auth.session_views``): what a clinician searched for is not left readable in the
    database either. A view dies with its session.
    """

    __tablename__ = "web_session_views"
    __table_args__ = (
        Index("ix_web_session_views_session", "session_id", "created_at"),
        Index("ix_web_session_views_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("web_sessions.id", ondelete="CASCADE"))
    page: Mapped[str] = mapped_column(String(32))
    state: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
