"""Portal sessions: a random cookie for the browser, a hashed row in the auth database.

The portal does not reuse the API's access/refresh pair. A browser fires requests in
parallel (several uploads at once), and rotating refresh tokens under that load would
look exactly like token theft and end the session. A server-side session needs no
rotation, ends everywhere the moment it is revoked, and expires when idle.

CSRF tokens are derived from the session (HMAC with the vault's secret key), so they
need no storage and die with the session.

Like ``auth.sessions``, these functions flush and never commit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth import repository, session_views
from medvault.auth.models import User, WebSession
from medvault.auth.password_slots import PasswordCheckSlots
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.auth.principal_cache import Expiring, PrincipalCache, credential_key
from medvault.auth.sessions import check_password, user_actor
from medvault.config import Settings
from medvault.kit import i18n
from medvault.kit.clock import utcnow
from medvault.kit.time_zones import known_zone

SESSION_TOKEN_PREFIX = "mvw_"  # noqa: S105  (a public prefix that makes leaks greppable)
# Activity is written at most this often: a page view should not be a database write.
TOUCH_INTERVAL = timedelta(seconds=30)


@dataclass(frozen=True)
class StartedWebSession:
    """The cookie value exists only here; the database keeps its hash."""

    token: str
    session_id: uuid.UUID
    user_id: uuid.UUID
    # The user's chosen portal language, for this browser to remember from now on.
    language: str | None = None


@dataclass(frozen=True)
class ActiveWebSession:
    """A live portal session, resolved for one request."""

    session_id: uuid.UUID
    token_hash: str
    principal: Principal
    break_glass_until: datetime | None
    needs_touch: bool = False
    # When the user's previous visit ended (None on a first visit): "New" badges.
    previous_visit_at: datetime | None = None
    # The IANA zone the user's browser reported at a portal login; None: never reported.
    time_zone: str | None = None
    # Until when this resolution stays exactly true with no further read: the session's
    # absolute end, its next activity write (so never past the idle limit either), and
    # the end of break-glass. A principal cache must not serve it from this instant on.
    valid_until: datetime | None = None


def hash_session_token(token: str) -> str:
    # 256 random bits: a fast hash is a safe lookup key (see auth.tokens).
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(*, secret_key: bytes, token_hash: str) -> str:
    """The CSRF token for a session: unguessable without the session, and stateless."""
    return hmac.new(secret_key, b"csrf:" + token_hash.encode(), hashlib.sha256).hexdigest()


def csrf_matches(*, secret_key: bytes, token_hash: str, presented: str | None) -> bool:
    if not presented:
        return False
    expected = csrf_token(secret_key=secret_key, token_hash=token_hash)
    return hmac.compare_digest(expected, presented)


def start(
    *,
    reader: Session,
    auth_session: Session,
    clinical_session: Session,
    settings: Settings,
    username: str,
    password: str,
    context: AuditContext,
    password_slots: PasswordCheckSlots,
    browser_time_zone: str | None = None,
    browser_language: str | None = None,
) -> StartedWebSession | None:
    """Check a password and open a portal session; None (audited) when the login fails.

    ``browser_time_zone`` is the IANA zone the login page's script read from the
    browser; a known one becomes the user's zone for showing times, anything else
    (no script, a made-up name) leaves the stored zone as it was. ``browser_language``
    is a language chosen in this browser before logging in: it becomes the user's, so
    the next device they log in on speaks it too.
    """
    user = check_password(
        reader=reader,
        auth_session=auth_session,
        clinical_session=clinical_session,
        username=username,
        password=password,
        context=context,
        password_slots=password_slots,
    )
    if user is None:
        return None
    zone = known_zone(browser_time_zone)
    if zone is not None and zone.key != user.time_zone:
        user.time_zone = zone.key
    chosen = i18n.supported(browser_language)
    if chosen is not None and chosen != user.language:
        user.language = chosen
    now = utcnow()
    token = SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = WebSession(
        user_id=user.id,
        token_hash=hash_session_token(token),
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(seconds=settings.web_session_max_seconds),
        previous_visit_at=repository.previous_visit_end(auth_session, user.id),
    )
    auth_session.add(row)
    auth_session.flush()
    audit.record(
        session=clinical_session,
        context=user_actor(context, user),
        action="auth.login",
        resource_type="User",
        resource_id=user.id,
        details={"username": user.username, "session_id": str(row.id), "via": "portal"},
    )
    return StartedWebSession(
        token=token, session_id=row.id, user_id=user.id, language=i18n.supported(user.language)
    )


def _principal(user: User, row: WebSession, now: datetime) -> Principal:
    emergency = (
        row.break_glass_reason
        if row.break_glass_until is not None and row.break_glass_until > now
        else None
    )
    return Principal(
        kind=PrincipalKind.USER,
        subject_id=user.id,
        name=user.username,
        label=user.label,
        role=Role(user.role),
        patient_id=user.patient_id,
        break_glass_reason=emergency,
        session_id=row.id,
    )


def resolve(*, session: Session, settings: Settings, token: str) -> ActiveWebSession | None:
    """The live session behind a cookie, or None if it is unknown, ended or idle.

    Read-only, so a page view takes no write lock; ``touch`` records activity when
    ``needs_touch`` says it is due. Role, patient link and the disabled flag come from
    the user row on every request, so an admin's change applies at the next click.
    """
    found = repository.web_session_by_hash(session, hash_session_token(token))
    if found is None:
        return None
    row, user = found
    now = utcnow()
    idle_cutoff = now - timedelta(seconds=settings.web_session_idle_seconds)
    if (
        row.revoked_at is not None
        or row.expires_at <= now
        or row.last_seen_at <= idle_cutoff
        or user.disabled_at is not None
    ):
        return None
    principal = _principal(user, row, now)
    break_glass_until = row.break_glass_until if principal.break_glass_reason else None
    # TOUCH_INTERVAL is shorter than any idle limit (>= 60 s), so an answer served
    # until the next touch is due is never served past the idle limit.
    ends = [row.expires_at, row.last_seen_at + TOUCH_INTERVAL]
    return ActiveWebSession(
        session_id=row.id,
        token_hash=row.token_hash,
        principal=principal,
        break_glass_until=break_glass_until,
        needs_touch=now - row.last_seen_at >= TOUCH_INTERVAL,
        previous_visit_at=row.previous_visit_at,
        time_zone=user.time_zone,
        valid_until=min([*ends, break_glass_until] if break_glass_until else ends),
    )


def resolve_cached(
    *,
    cache: PrincipalCache[ActiveWebSession],
    read_session: Callable[[], AbstractContextManager[Session]],
    settings: Settings,
    token: str,
) -> ActiveWebSession | None:
    """:func:`resolve` through the process's principal cache (``auth.principal_cache``).

    A resolution that needs its activity write is never served from the cache (its
    ``valid_until`` is already over), so ``touch`` still runs when it is due.
    """

    def load() -> Expiring[ActiveWebSession] | None:
        with read_session() as session:
            active = resolve(session=session, settings=settings, token=token)
        return Expiring(active, active.valid_until) if active is not None else None

    return cache.resolve(credential_key("web", token), load)


def touch(*, session: Session, settings: Settings, session_id: uuid.UUID) -> bool:
    """Record activity; False if the session ended or went idle in the meantime."""
    now = utcnow()
    idle_cutoff = now - timedelta(seconds=settings.web_session_idle_seconds)
    return repository.touch_web_session(session, session_id, now=now, idle_cutoff=idle_cutoff)


def end(
    *, auth_session: Session, clinical_session: Session, token: str, context: AuditContext
) -> bool:
    """Log out: the session stops working on every instance at once."""
    found = repository.web_session_by_hash(auth_session, hash_session_token(token))
    if found is None:
        return False
    row, user = found
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        # What the session searched for goes with it, not at the next sweep.
        session_views.forget_session(auth_session, row.id)
        auth_session.flush()
        repository.bump_auth_epoch(auth_session)  # cached resolutions die at commit
    audit.record(
        session=clinical_session,
        context=user_actor(context, user),
        action="auth.logout",
        resource_type="User",
        resource_id=user.id,
        details={"session_ids": [str(row.id)], "via": "portal"},
    )
    return True


def declare_break_glass(
    *,
    auth_session: Session,
    clinical_session: Session,
    settings: Settings,
    session_id: uuid.UUID,
    reason: str,
    context: AuditContext,
) -> datetime:
    """Open emergency access for this session for a limited time; when it ends.

    The declaration is itself an audit event, and every request made under it carries
    the reason (through the principal) in its own event.
    """
    row = auth_session.get(WebSession, session_id)
    if row is None or row.revoked_at is not None:
        raise LookupError(session_id)
    until = utcnow() + timedelta(seconds=settings.web_break_glass_seconds)
    row.break_glass_reason = reason
    row.break_glass_until = until
    auth_session.flush()
    # Widens rather than narrows, but the declaration must apply at the next click.
    repository.bump_auth_epoch(auth_session)
    audit.record(
        session=clinical_session,
        context=context,
        action="access.break_glass.start",
        resource_type="User",
        resource_id=row.user_id,
        details={"session_id": str(session_id), "until": until.isoformat()},
    )
    return until


def end_break_glass(
    *,
    auth_session: Session,
    clinical_session: Session,
    session_id: uuid.UUID,
    context: AuditContext,
) -> None:
    row = auth_session.get(WebSession, session_id)
    if row is None or row.break_glass_until is None:
        return
    row.break_glass_reason = None
    row.break_glass_until = None
    auth_session.flush()
    repository.bump_auth_epoch(auth_session)
    audit.record(
        session=clinical_session,
        context=context,
        action="access.break_glass.end",
        resource_type="User",
        resource_id=row.user_id,
        details={"session_id": str(session_id)},
    )


def set_language(*, session: Session, user_id: uuid.UUID, language: str) -> None:
    """Remember a signed-in user's choice of portal language for every device."""
    user = session.get(User, user_id)
    if user is not None and i18n.supported(language):
        user.language = language
