"""User accounts: the people who log in.

Every change is audited in the clinical database (actor = whoever made it), and no
event ever carries a password or its hash. Functions flush and never commit; see
``auth.service.commit_with_audit`` for the order in which callers commit.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth import repository
from medvault.auth.models import User
from medvault.auth.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password
from medvault.auth.principal import Role
from medvault.auth.sessions import normalise_username
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_, msg
from medvault.kit.problems import Conflict, NotFound, Problem, UnknownPatient
from medvault.patients import repository as patients

USER_ROLES = frozenset({Role.ADMIN, Role.CLINICIAN, Role.PATIENT, Role.AUDITOR})
USERNAME_PATTERN = re.compile(r"[a-z0-9._-]{3,64}")
# Deliberately plain: enough to catch typos and pasted junk. Whether the address
# receives mail can only be proven by sending some, which the vault does not do.
EMAIL_PATTERN = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)


class InvalidUser(Problem):
    status, slug, title = 422, "invalid-user", N_("The user details are not valid")


class DuplicateUser(Problem):
    status, slug, title = 409, "duplicate-user", N_("A user with this username or email exists")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidUser(
            msg("Passwords must be at least {limit} characters.", limit=MIN_PASSWORD_LENGTH)
        )
    if len(password) > 1024:
        # argon2 takes any length, but nobody types this much; it is a cheap DoS guard.
        raise InvalidUser(N_("Passwords may be at most 1024 characters."))


def _normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 255 or not EMAIL_PATTERN.fullmatch(email):
        raise InvalidUser(N_("The email address is not valid."))
    return email


MAX_LABEL = 100


def _label(value: str | None, what: str) -> str | None:
    """A display name or profession: trimmed, one line, at most ``MAX_LABEL``; "" is none."""
    text = " ".join((value or "").split())
    if len(text) > MAX_LABEL:
        raise InvalidUser(
            msg("The {what} may be at most {limit} characters.", what=what, limit=MAX_LABEL)
        )
    return text or None


def _record(
    *, session: Session, context: AuditContext, action: str, user: User, **details: object
) -> None:
    audit.record(
        session=session,
        context=context,
        action=action,
        resource_type="User",
        resource_id=user.id,
        patient_id=user.patient_id,
        details={"username": user.username, **details},
    )


def create(
    *,
    auth_session: Session,
    clinical_session: Session,
    username: str,
    email: str,
    password: str,
    role: Role,
    patient_id: uuid.UUID | None,
    context: AuditContext,
    display_name: str | None = None,
    profession: str | None = None,
) -> User:
    """Create a user; a patient user must name an existing patient, nobody else may."""
    username = normalise_username(username)
    display_name = _label(display_name, msg("display name"))
    profession = _label(profession, msg("profession"))
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidUser(N_("Usernames are 3 to 64 characters: a-z, 0-9, '.', '_' and '-'."))
    email = _normalise_email(email)
    if role not in USER_ROLES:
        raise InvalidUser(N_("The role must be admin, clinician, patient or auditor."))
    if (role is Role.PATIENT) != (patient_id is not None):
        raise InvalidUser(N_("A patient user needs a patient id, and only a patient user has one."))
    _check_password(password)
    # Hashed before the first query: on SQLite that query starts the auth database's
    # write transaction, and argon2's ~0.1 s should not be spent holding its lock.
    password_hash = hash_password(password)
    if repository.user_by_username(auth_session, username) is not None:
        raise DuplicateUser(N_("This username is taken."))
    if repository.user_by_email(auth_session, email) is not None:
        raise DuplicateUser(N_("This email address belongs to another user."))
    now = utcnow()
    user = User(
        username=username,
        email=email,
        password_hash=password_hash,
        role=role.value,
        patient_id=patient_id,
        created_at=now,
        updated_at=now,
        display_name=display_name,
        profession=profession,
    )
    auth_session.add(user)
    try:
        auth_session.flush()
    except IntegrityError:
        # Lost a race with a concurrent create (or a second instance's first start).
        auth_session.rollback()
        raise DuplicateUser(N_("This username or email address was just taken.")) from None
    # Only now the clinical database: the auth write lock is always taken first.
    if patient_id is not None and patients.get(clinical_session, patient_id) is None:
        raise UnknownPatient(N_("No patient with this id."))
    _record(
        session=clinical_session, context=context, action="user.create", user=user, role=role.value
    )
    return user


def get(*, session: Session, user_id: uuid.UUID) -> User:
    user = repository.user_by_id(session, user_id)
    if user is None:
        raise NotFound(N_("No user with this id."))
    return user


def get_by_username(*, session: Session, username: str) -> User:
    user = repository.user_by_username(session, normalise_username(username))
    if user is None:
        raise NotFound(msg("No user named {username}.", username=repr(username)))
    return user


def list_users(*, session: Session, role: Role | None = None) -> list[User]:
    """Every user, by username (a hospital has thousands at most, not millions)."""
    return repository.list_users(session, role=role.value if role else None)


def disable(
    *, auth_session: Session, clinical_session: Session, user_id: uuid.UUID, context: AuditContext
) -> User:
    """Lock a user out at once: every session ends and their access tokens stop working.

    The last enabled admin cannot be disabled, so the vault always has someone who can
    undo a mistake (the CLI can still create a new admin on the server).
    """
    user = get(session=auth_session, user_id=user_id)
    if user.disabled_at is not None:
        return user
    if user.role == Role.ADMIN.value and repository.count_active_admins(auth_session) <= 1:
        raise Conflict(N_("This is the last enabled admin; enable or create another first."))
    now = utcnow()
    user.disabled_at = user.updated_at = now
    revoked = repository.revoke_user_sessions(auth_session, user.id, now)
    auth_session.flush()
    repository.bump_auth_epoch(auth_session)  # last auth write (see bump_auth_epoch)
    _record(
        session=clinical_session,
        context=context,
        action="user.disable",
        user=user,
        tokens_revoked=revoked,
    )
    return user


def set_profile(
    *,
    auth_session: Session,
    clinical_session: Session,
    user_id: uuid.UUID,
    display_name: str | None,
    profession: str | None,
    context: AuditContext,
) -> User:
    """Set the name and profession people see instead of the username ("" clears them)."""
    user = get(session=auth_session, user_id=user_id)
    user.display_name = _label(display_name, msg("display name"))
    user.profession = _label(profession, msg("profession"))
    user.updated_at = utcnow()
    auth_session.flush()
    # Cached principals carry the name (the portal's header, a letter's author).
    repository.bump_auth_epoch(auth_session)
    _record(session=clinical_session, context=context, action="user.profile", user=user)
    return user


def enable(
    *, auth_session: Session, clinical_session: Session, user_id: uuid.UUID, context: AuditContext
) -> User:
    """Let a disabled user log in again; their old sessions stay ended."""
    user = get(session=auth_session, user_id=user_id)
    if user.disabled_at is None:
        return user
    user.disabled_at = None
    user.updated_at = utcnow()
    auth_session.flush()
    # Not needed for safety (a refusal is never cached), but every change to who may
    # do what moves the epoch, so no reader has to reason about which ones may not.
    repository.bump_auth_epoch(auth_session)
    _record(session=clinical_session, context=context, action="user.enable", user=user)
    return user


def change_password(
    *,
    auth_session: Session,
    clinical_session: Session,
    user_id: uuid.UUID,
    new_password: str,
    context: AuditContext,
    current_password: str | None = None,
) -> User:
    """Set a new password and end every session of the user.

    ``current_password`` is checked when given (a user changing their own); an admin
    or the CLI resetting it passes None.
    """
    _check_password(new_password)
    new_hash = hash_password(new_password)  # before the write transaction (see create)
    user = get(session=auth_session, user_id=user_id)
    if current_password is not None and not verify_password(user.password_hash, current_password):
        raise InvalidUser(N_("The current password is wrong."))
    now = utcnow()
    user.password_hash = new_hash
    user.updated_at = now
    revoked = repository.revoke_user_sessions(auth_session, user.id, now)
    auth_session.flush()
    repository.bump_auth_epoch(auth_session)  # last auth write (see bump_auth_epoch)
    _record(
        session=clinical_session,
        context=context,
        action="user.password.change",
        user=user,
        tokens_revoked=revoked,
    )
    return user
