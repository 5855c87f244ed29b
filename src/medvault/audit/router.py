"""Audit API v1: events, signed checkpoints, inclusion and consistency proofs.

Thin: authorise, call :mod:`medvault.audit.queries`, commit the ``audit.read``
event, respond. The ``/api/v1/audit`` routes serve the whole log, its checkpoints and
proofs: whole-log readers only (auditors, tokens with ``audit:read`` and no
``patient/`` scope; see ``access.audit_reach``). A patient reads the events about their
own record, in a reduced projection, at ``/api/v1/patients/{id}/access-history``.

``audit_denial`` is the audit log's other HTTP face: the problem observer that records
refusals (``audit.denials``) with the request's client, agent and id.
"""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request

from medvault.access.audit_reach import require_whole_log
from medvault.access.denials import Denial
from medvault.audit import queries
from medvault.audit import service as audit
from medvault.audit.access_history import AccessHistoryPage
from medvault.audit.denials import record_denial
from medvault.audit.repository import EventFilters
from medvault.audit.schemas import (
    AuditEventPage,
    ConsistencyProofOut,
    InclusionProofOut,
    SignedCheckpointOut,
)
from medvault.db.replica import read_with_fallback
from medvault.deps import (
    AuditCtx,
    AuthReadSession,
    ClinicalReplicaSession,
    ClinicalSession,
    CurrentPrincipal,
    RuntimeDep,
    client_ip,
)
from medvault.kit.problems import Problem
from medvault.kit.redaction import loggable_path
from medvault.kit.timestamps import IsoDateTime
from medvault.runtime import Runtime

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
# A patient's own access history sits with the patient it is about.
access_history_router = APIRouter(prefix="/api/v1/patients", tags=["audit"])


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@router.get("/events", response_model=AuditEventPage)
def list_events(
    session: ClinicalReplicaSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    patient_id: uuid.UUID | None = None,
    actor: Annotated[str | None, Query(max_length=200, description="Exact actor id")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    occurred_after: Annotated[IsoDateTime | None, Query(description="Inclusive; UTC")] = None,
    occurred_before: Annotated[IsoDateTime | None, Query(description="Exclusive; UTC")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> AuditEventPage:
    """Newest first (by id, the order events were written); pass `next_cursor` back."""
    require_whole_log(principal)
    filters = EventFilters(
        patient_id=patient_id,
        actor_id=actor,
        action=action,
        occurred_after=_as_utc(occurred_after),
        occurred_before=_as_utc(occurred_before),
    )
    page = read_with_fallback(
        session,
        lambda: queries.list_events(
            session=session,
            principal=principal,
            context=context,
            filters=filters,
            cursor=cursor,
            limit=limit,
        ),
    )
    audit.commit_or_refuse(session)
    return page


@router.get("/checkpoint", response_model=SignedCheckpointOut)
def latest_checkpoint(
    session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx, runtime: RuntimeDep
) -> SignedCheckpointOut:
    """The latest signed checkpoint, its note, and the public key that verifies it."""
    require_whole_log(principal)
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
    require_whole_log(principal)
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
    require_whole_log(principal)
    proof = queries.consistency(session=session, context=context, first=first, second=second)
    audit.commit_or_refuse(session)
    return proof


@access_history_router.get("/{patient_id}/access-history", response_model=AccessHistoryPage)
def access_history(
    patient_id: uuid.UUID,
    session: ClinicalSession,
    auth_session: AuthReadSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> AccessHistoryPage:
    """Who did what with this patient's record, newest first: staff by role, never by
    address, user agent or username. For the patient (a patient user, or a token whose
    `patient/` scopes bind it to its patient) and for auditors."""
    page = queries.access_history(
        session=session,
        auth_session=auth_session,
        principal=principal,
        context=context,
        patient_id=patient_id,
        cursor=cursor,
        limit=limit,
    )
    audit.commit_or_refuse(session)
    return page


async def audit_denial(request: Request, problem: Problem) -> None:
    """Problem observer: audit the refusals that carry a denial (see ``access.denials``)."""
    denial = problem.denial
    if not isinstance(denial, Denial):
        return
    runtime: Runtime = request.app.state.runtime
    # The request is read here, on the event loop; only the database work goes to a
    # worker thread (anyio's run_sync takes no keyword arguments, hence the partial).
    record = functools.partial(
        record_denial,
        runtime=runtime,
        denial=denial,
        problem=problem,
        path=loggable_path(request.url.path),
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
    )
    try:
        await to_thread.run_sync(record)
    except Exception:
        # The refusal stands either way; a lost denial event is logged, not hidden.
        logger.exception("could not audit an access denial")
