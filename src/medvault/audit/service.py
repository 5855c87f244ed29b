"""Recording audit events.

Events are added to the caller's session, so they commit or roll back together with
the change they describe: there is never a change without its event.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from medvault.audit.context import AuditContext
from medvault.audit.models import AuditEvent
from medvault.kit.clock import utcnow
from medvault.kit.problems import ServiceUnavailable


class Outcome(StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILURE = "failure"


def record(
    *,
    session: Session,
    context: AuditContext,
    action: str,
    outcome: Outcome = Outcome.SUCCESS,
    resource_type: str | None = None,
    resource_id: uuid.UUID | str | None = None,
    patient_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        occurred_at=utcnow(),
        actor_id=context.actor_id,
        actor_role=context.actor_role,
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id) if resource_id is not None else None,
        patient_id=patient_id,
        outcome=outcome.value,
        client_ip=context.client_ip,
        user_agent=context.user_agent,
        request_id=context.request_id,
        details=details or {},
        break_glass_reason=context.break_glass_reason,
    )
    session.add(event)
    try:
        session.flush()
    except SQLAlchemyError as exc:
        # Fail closed: whatever this event was guarding must not happen unrecorded.
        session.rollback()
        raise ServiceUnavailable(
            "The action could not be recorded in the audit log, so it was refused."
        ) from exc
    return event


def commit_or_refuse(session: Session) -> None:
    """Commit a read's audit event before any data leaves: no audit, no access (503)."""
    try:
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise ServiceUnavailable(
            "The access could not be recorded in the audit log, so it was refused."
        ) from exc
