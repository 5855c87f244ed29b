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
from medvault.db.engine import Database
from medvault.db.group_commit import GroupCommitFailed
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.problems import ServiceUnavailable


class Outcome(StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILURE = "failure"


def build(
    *,
    context: AuditContext,
    action: str,
    outcome: Outcome = Outcome.SUCCESS,
    resource_type: str | None = None,
    resource_id: uuid.UUID | str | None = None,
    patient_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """One event, not yet added to any session."""
    return AuditEvent(
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
    """Add an event to ``session``: it commits or rolls back with the change it describes."""
    event = build(
        context=context,
        action=action,
        outcome=outcome,
        resource_type=resource_type,
        resource_id=resource_id,
        patient_id=patient_id,
        details=details,
    )
    session.add(event)
    try:
        session.flush()
    except SQLAlchemyError as exc:
        # Fail closed: whatever this event was guarding must not happen unrecorded.
        session.rollback()
        raise ServiceUnavailable(
            N_("The action could not be recorded in the audit log, so it was refused.")
        ) from exc
    return event


def record_read(database: Database, event: AuditEvent) -> None:
    """Make a read's event durable before any data leaves: no audit, no access (503).

    A read changes nothing else, so its event alone is its transaction, and concurrent
    reads share one commit (``db.group_commit``): on SQLite one fsync for the batch
    instead of one each, queued on the writer lock; on PostgreSQL one commit round trip.
    """
    try:
        database.group_commit.commit([event])
    except GroupCommitFailed as exc:
        raise ServiceUnavailable(
            N_("The access could not be recorded in the audit log, so it was refused.")
        ) from exc


def commit_or_refuse(session: Session) -> None:
    """Commit a read's audit event before any data leaves: no audit, no access (503)."""
    try:
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise ServiceUnavailable(
            N_("The access could not be recorded in the audit log, so it was refused.")
        ) from exc
