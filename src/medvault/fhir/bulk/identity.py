"""The requesting principal, resolved again from its stored identity when the job runs.

An export may run minutes after its kick-off, and its files may be fetched hours
later. The rights it runs with are the principal's rights *then*: a revoked or expired
API token, a disabled user, a changed role or a logged-out session count, exactly as
they would on that principal's next request. Tokens follow
``auth.service.token_principal``, the rule for presented tokens too; users need a live
login session (``auth.repository.user_with_live_session``).
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from medvault.auth import repository
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.auth.service import token_principal


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
    return None if row is None else token_principal(session, row)


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
