"""First start: make sure someone can log in."""

from __future__ import annotations

import secrets

from medvault.audit.context import AuditContext
from medvault.auth import repository, users
from medvault.auth.passwords import MIN_PASSWORD_LENGTH
from medvault.auth.principal import Role
from medvault.auth.service import commit_with_audit
from medvault.config import ConfigurationError
from medvault.runtime import Runtime

FIRST_ADMIN_USERNAME = "admin"
# RFC 2606's reserved .invalid: obviously a placeholder, and never delivers anywhere.
FIRST_ADMIN_EMAIL = "admin@medvault.invalid"


def ensure_first_admin(runtime: Runtime) -> str | None:
    """Create the user "admin" if there are no users; return its password if generated.

    The password is ``MEDVAULT_BOOTSTRAP_ADMIN_PASSWORD`` if set (None is returned),
    else a random one that the caller shows once, on the terminal, never in a log.
    Safe when several instances start at once: on SQLite the check and the insert
    share one write transaction; on PostgreSQL the unique username lets one insert
    win, and the others return None without having written anything.
    """
    configured = runtime.settings.bootstrap_admin_password
    if configured is not None and len(configured) < MIN_PASSWORD_LENGTH:
        raise ConfigurationError(
            f"MEDVAULT_BOOTSTRAP_ADMIN_PASSWORD must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    password = configured or secrets.token_urlsafe(18)  # 144 bits, 24 characters
    with runtime.auth.session() as auth_session, runtime.clinical.session() as clinical_session:
        if repository.any_user(auth_session):
            return None
        try:
            users.create(
                auth_session=auth_session,
                clinical_session=clinical_session,
                username=FIRST_ADMIN_USERNAME,
                email=FIRST_ADMIN_EMAIL,
                password=password,
                role=Role.ADMIN,
                patient_id=None,
                context=AuditContext.system("bootstrap"),
            )
        except users.DuplicateUser:
            return None  # another instance got there first
        commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    return None if configured else password


FIRST_CLINICIAN_USERNAME = "clinician"
FIRST_CLINICIAN_EMAIL = "clinician@medvault.invalid"


def ensure_first_clinician(runtime: Runtime) -> str | None:
    """Outside production, give an empty vault a clinician too; return its password.

    An admin may not file or open documents (see ``access.policy``), so a newcomer
    trying the portal on the embedded default needs a clinician to log in as. In
    production nobody is created besides the admin: people are added deliberately.
    Nothing happens once any clinician exists.
    """
    if runtime.settings.env == "production":
        return None
    password = secrets.token_urlsafe(18)
    with runtime.auth.session() as auth_session, runtime.clinical.session() as clinical_session:
        if repository.list_users(auth_session, role=Role.CLINICIAN.value):
            return None
        try:
            users.create(
                auth_session=auth_session,
                clinical_session=clinical_session,
                username=FIRST_CLINICIAN_USERNAME,
                email=FIRST_CLINICIAN_EMAIL,
                password=password,
                role=Role.CLINICIAN,
                patient_id=None,
                context=AuditContext.system("bootstrap"),
            )
        except users.DuplicateUser:
            return None
        commit_with_audit(auth_session=auth_session, clinical_session=clinical_session)
    return password
