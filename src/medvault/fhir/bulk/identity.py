"""The requesting principal, resolved again from its stored identity when the job runs.

An export may run minutes after its kick-off, and its files may be fetched hours
later. The rights it runs with are the principal's rights *then*: a revoked or expired
API token, a disabled user, a changed role or a logged-out session count, exactly as
they would on that principal's next request. The rules mirror ``auth.service`` and
``auth.sessions`` (which resolve a presented credential); here there is only the id.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from medvault.auth import repository
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.kit.clock import utcnow


def resolve(
    session: Session, *, kind: str, principal_id: uuid.UUID, session_id: uuid.UUID | None
) -> Principal | None:
    """The principal as it stands now, or None when it may no longer act at all."""
    if kind == PrincipalKind.API_TOKEN.value:
        return _api_token(session, principal_id)
    if kind == PrincipalKind.USER.value and session_id is not None:
        return _user(session, principal_id, session_id)
    return None  # signed URLs never start exports


def _api_token(session: Session, token_id: uuid.UUID) -> Principal | None:
    row = repository.token_by_id(session, token_id)
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    patient_id = None
    if row.user_id is not None:
        owner = repository.user_by_id(session, row.user_id)
        if owner is None or owner.disabled_at is not None:
            return None
        patient_id = owner.patient_id
    return Principal(
        kind=PrincipalKind.API_TOKEN,
        subject_id=row.id,
        name=row.name,
        role=Role(row.role),
        scopes=frozenset(row.scopes),
        patient_id=patient_id,
    )


def _user(session: Session, user_id: uuid.UUID, session_id: uuid.UUID) -> Principal | None:
    found = repository.user_with_live_session(session, user_id, session_id)
    if found is None:
        return None
    user, live = found
    if not live or user.disabled_at is not None:
        return None
    return Principal(
        kind=PrincipalKind.USER,
        subject_id=user.id,
        name=user.username,
        label=user.label,
        role=Role(user.role),
        patient_id=user.patient_id,
        session_id=session_id,
    )
