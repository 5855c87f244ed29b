"""Login sessions: password login, rotating refresh tokens, logout.

A login starts a *session* (a refresh-token family). Each refresh token works once
and is replaced by the next in the same family. Presenting one that was already used
means two parties hold the same chain (a stolen token, or a replay), and since we
cannot tell which is the rightful one, the whole family is revoked. Access tokens
carry the family as ``sid`` and die with it on their next request.

These functions flush and never commit: the caller commits the clinical database
(the audit event) first, then the auth database (see ``auth.service.commit_with_audit``).
When both databases are touched, the auth session is always used first, so that two
requests on SQLite never wait on each other's write locks in opposite orders.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy.orm import Session

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.service import Outcome
from medvault.auth import repository
from medvault.auth.jwt_tokens import decode_access_token, issue_access_token
from medvault.auth.models import RefreshToken, User
from medvault.auth.password_slots import PasswordCheckSlots
from medvault.auth.passwords import hash_password, needs_rehash, verify_password
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.auth.principal_cache import Expiring
from medvault.config import Settings
from medvault.crypto.signing_keys import SigningKey
from medvault.kit.clock import utcnow

REFRESH_TOKEN_PREFIX = "mvr_"  # noqa: S105  (a public prefix that makes leaks greppable)
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class IssuedSession:
    """A token pair; the refresh token's plaintext exists only here, never in a row."""

    access_token: str
    expires_in: int
    refresh_token: str
    user_id: uuid.UUID
    session_id: uuid.UUID


def normalise_username(username: str) -> str:
    return username.strip().lower()


def hash_refresh_token(token: str) -> str:
    # 256 random bits: a fast hash is a safe lookup key (see auth.tokens).
    return hashlib.sha256(token.encode()).hexdigest()


def user_actor(context: AuditContext, user: User) -> AuditContext:
    """The request's context, attributed to ``user`` (before they hold a principal)."""
    return replace(context, actor_id=f"{PrincipalKind.USER.value}:{user.id}", actor_role=user.role)


def _issue(
    *,
    session: Session,
    key: SigningKey,
    settings: Settings,
    user: User,
    family_id: uuid.UUID,
) -> IssuedSession:
    now = utcnow()
    refresh = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=hash_refresh_token(refresh),
            issued_at=now,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl_seconds),
        )
    )
    session.flush()
    access = issue_access_token(
        key=key,
        user_id=user.id,
        role=Role(user.role),
        patient_id=user.patient_id,
        session_id=family_id,
        now=now,
        ttl_seconds=settings.access_token_ttl_seconds,
    )
    return IssuedSession(
        access_token=access,
        expires_in=settings.access_token_ttl_seconds,
        refresh_token=refresh,
        user_id=user.id,
        session_id=family_id,
    )


def check_password(
    *,
    reader: Session,
    auth_session: Session,
    clinical_session: Session,
    username: str,
    password: str,
    context: AuditContext,
    password_slots: PasswordCheckSlots,
) -> User | None:
    """The enabled user with this username and password, loaded in ``auth_session``.

    A failure is audited here, with the same care for every way of logging in (API
    and portal): unknown users, wrong passwords and disabled users look alike. The
    hash is checked under one of ``password_slots`` (LoginBusy when none is free), and
    so is the dummy hash of an unknown user.
    """
    candidate = repository.user_by_username(reader, normalise_username(username))
    with password_slots.slot():
        password_ok = verify_password(candidate.password_hash if candidate else None, password)
    user: User | None = None
    if candidate is not None and password_ok:
        current = repository.user_by_id(auth_session, candidate.id)
        if current is not None and current.password_hash != candidate.password_hash:
            # The hash changed while we checked the old one. A new password does not
            # count; but a concurrent login on another instance may only have rehashed
            # the same password with newer parameters (below), and that must not turn
            # this correct password into a 401 (it did, under the scale-out test).
            with password_slots.slot():
                if not verify_password(current.password_hash, password):
                    current = None
        user = current
    if user is None or user.disabled_at is not None:
        known = user or candidate
        reason = (
            "unknown-user"
            if known is None
            else "wrong-password"
            if not password_ok or user is None
            else "user-disabled"
        )
        audit.record(
            session=clinical_session,
            context=user_actor(context, known) if known else context,
            action="auth.login",
            outcome=Outcome.FAILURE,
            resource_type="User" if known else None,
            resource_id=known.id if known else None,
            details={"reason": reason, **({"username": known.username} if known else {})},
        )
        return None
    if needs_rehash(user.password_hash):
        # argon2's recommended parameters grow over time; upgrade while we hold the
        # password, but only with a free slot: the upgrade can wait for another login.
        with password_slots.slot_if_free() as free:
            if free:
                user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    return user


def login(
    *,
    reader: Session,
    auth_session: Session,
    clinical_session: Session,
    key: SigningKey,
    settings: Settings,
    username: str,
    password: str,
    context: AuditContext,
    password_slots: PasswordCheckSlots,
) -> IssuedSession | None:
    """Check a password and start a session; None (audited) when the login fails.

    Unknown users, wrong passwords and disabled users fail identically and take the
    same time (``verify_password`` runs against a dummy hash for unknown users).
    The attempted username is recorded only when it names a real user: people type
    passwords into the username field, and those must not end up in the audit log.

    The password is checked on ``reader`` (a read-only session) because argon2 takes
    about 0.1 s of CPU: on SQLite, doing it inside the write transaction would hold
    the auth database's only write lock that long for every login attempt.
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
    issued = _issue(
        session=auth_session, key=key, settings=settings, user=user, family_id=uuid.uuid4()
    )
    audit.record(
        session=clinical_session,
        context=user_actor(context, user),
        action="auth.login",
        resource_type="User",
        resource_id=user.id,
        details={"username": user.username, "session_id": str(issued.session_id)},
    )
    return issued


def refresh(
    *,
    auth_session: Session,
    clinical_session: Session,
    key: SigningKey,
    settings: Settings,
    refresh_token: str,
    context: AuditContext,
) -> IssuedSession | None:
    """Rotate a refresh token into a new pair in the same session; None if refused.

    A token that was already used or revoked revokes its whole family and is audited
    as a possible theft; the caller must commit even though it answers 401.
    """
    row = repository.refresh_token_by_hash(auth_session, hash_refresh_token(refresh_token))
    if row is None:
        return None
    now = utcnow()
    unused = row.used_at is None and row.revoked_at is None
    if unused and row.expires_at <= now:
        return None  # merely stale; marking it used would make a retry look like theft
    user = repository.user_by_id(auth_session, row.user_id)
    if user is None or user.disabled_at is not None:
        return None  # disabling revoked every session already
    if not repository.mark_refresh_token_used(auth_session, row.id, now):
        revoked = repository.revoke_family(auth_session, row.family_id, now)
        repository.bump_auth_epoch(auth_session)
        audit.record(
            session=clinical_session,
            context=user_actor(context, user),
            action="auth.refresh.reuse",
            outcome=Outcome.FAILURE,
            resource_type="User",
            resource_id=row.user_id,
            details={
                "session_id": str(row.family_id),
                "tokens_revoked": revoked,
                "note": "a used or revoked refresh token was presented: possible theft",
            },
        )
        return None
    return _issue(
        session=auth_session, key=key, settings=settings, user=user, family_id=row.family_id
    )


def logout(
    *,
    auth_session: Session,
    clinical_session: Session,
    principal: Principal | None,
    refresh_token: str | None,
    context: AuditContext,
) -> int:
    """End the caller's session, and the one the refresh token belongs to; how many ended.

    Holding a refresh token is proof enough to end its session, so this works without
    an access token too (an expired one is the usual reason to log out late).
    """
    families: set[uuid.UUID] = set()
    owner: uuid.UUID | None = None
    if principal is not None and principal.session_id is not None:
        families.add(principal.session_id)
        owner = principal.subject_id
    if refresh_token:
        row = repository.refresh_token_by_hash(auth_session, hash_refresh_token(refresh_token))
        if row is not None:
            families.add(row.family_id)
            owner = owner or row.user_id
    if not families:
        return 0
    now = utcnow()
    revoked = sum(repository.revoke_family(auth_session, family, now) for family in families)
    repository.bump_auth_epoch(auth_session)  # last auth write (see bump_auth_epoch)
    user = repository.user_by_id(auth_session, owner) if owner is not None else None
    audit.record(
        session=clinical_session,
        context=user_actor(context, user) if user else context,
        action="auth.logout",
        resource_type="User",
        resource_id=owner,
        details={"session_ids": sorted(str(f) for f in families), "tokens_revoked": revoked},
    )
    return len(families)


def authenticate_access_token(*, session: Session, key: SigningKey, token: str) -> Principal | None:
    """The principal for a valid access token of an enabled user in a live session.

    Role and patient come from the user row, not the token: a changed role or a
    disabled account applies from the next request, not when the token expires.
    """
    found = access_token_principal(session=session, key=key, token=token)
    return found.value if found is not None else None


def access_token_principal(
    *, session: Session, key: SigningKey, token: str
) -> Expiring[Principal] | None:
    """As :func:`authenticate_access_token`, with the instant the token stops working."""
    claims = decode_access_token(key=key, token=token)
    if claims is None:
        return None
    found = repository.user_with_live_session(session, claims.user_id, claims.session_id)
    if found is None:
        return None
    user, live = found
    if not live or user.disabled_at is not None:
        return None
    principal = Principal(
        kind=PrincipalKind.USER,
        subject_id=user.id,
        name=user.username,
        label=user.label,
        role=Role(user.role),
        patient_id=user.patient_id,
        session_id=claims.session_id,
    )
    return Expiring(principal, claims.valid_until)
