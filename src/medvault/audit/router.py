"""Audit API v1: events, signed checkpoints, inclusion and consistency proofs.

Thin: authorise, call :mod:`medvault.audit.queries`, commit the ``audit.read``
event, respond. Every route needs ``audit:read`` (auditors and scoped tokens).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from medvault.access.policy import Permission, require
from medvault.audit import queries
from medvault.audit import service as audit
from medvault.audit.repository import EventFilters
from medvault.audit.schemas import (
    AuditEventPage,
    ConsistencyProofOut,
    InclusionProofOut,
    SignedCheckpointOut,
)
from medvault.deps import AuditCtx, ClinicalSession, CurrentPrincipal, RuntimeDep

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@router.get("/events", response_model=AuditEventPage)
def list_events(
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    patient_id: uuid.UUID | None = None,
    actor: Annotated[str | None, Query(max_length=200, description="Exact actor id")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    occurred_after: Annotated[datetime | None, Query(description="Inclusive; UTC")] = None,
    occurred_before: Annotated[datetime | None, Query(description="Exclusive; UTC")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> AuditEventPage:
    """Newest first (by id, the order events were written); pass `next_cursor` back."""
    require(principal, Permission.AUDIT_READ)
    filters = EventFilters(
        patient_id=patient_id,
        actor_id=actor,
        action=action,
        occurred_after=_as_utc(occurred_after),
        occurred_before=_as_utc(occurred_before),
    )
    page = queries.list_events(
        session=session, context=context, filters=filters, cursor=cursor, limit=limit
    )
    audit.commit_or_refuse(session)
    return page


@router.get("/checkpoint", response_model=SignedCheckpointOut)
def latest_checkpoint(
    session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx, runtime: RuntimeDep
) -> SignedCheckpointOut:
    """The latest signed checkpoint, its note, and the public key that verifies it."""
    require(principal, Permission.AUDIT_READ)
    checkpoint = queries.latest_checkpoint(session=session, context=context, key=runtime.audit_key)
    audit.commit_or_refuse(session)
    return checkpoint


@router.get("/proof/inclusion", response_model=InclusionProofOut)
def inclusion_proof(
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    index: Annotated[int, Query(ge=0, le=2**62, description="Leaf index")],
    size: Annotated[
        int | None, Query(ge=1, le=2**62, description="Tree size (default: latest checkpoint)")
    ] = None,
) -> InclusionProofOut:
    """RFC 6962 audit path of leaf `index` in the tree of `size` events.

    Take `size` and the root from a signed checkpoint: the proof does not pin the size.
    """
    require(principal, Permission.AUDIT_READ)
    proof = queries.inclusion(session=session, context=context, index=index, size=size)
    audit.commit_or_refuse(session)
    return proof


@router.get("/proof/consistency", response_model=ConsistencyProofOut)
def consistency_proof(
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    first: Annotated[int, Query(ge=1, le=2**62)],
    second: Annotated[
        int | None, Query(ge=1, le=2**62, description="Default: latest checkpoint")
    ] = None,
) -> ConsistencyProofOut:
    """RFC 6962 proof that the tree of `second` events extends the tree of `first`."""
    require(principal, Permission.AUDIT_READ)
    proof = queries.consistency(session=session, context=context, first=first, second=second)
    audit.commit_or_refuse(session)
    return proof
