"""Reading the audit log for the audit API: events, the latest checkpoint, and proofs.

Reading the audit log is itself audited (``audit.read``): each function records its
event in the caller's session and flushes; the route commits once, before anything
is returned (no audit, no access).

Proofs are served for any size up to the latest signed checkpoint, never beyond:
only a signed root tells a client which tree a proof is about. An inclusion proof
shows "leaf i is in the tree of size n with root r"; it does not pin n, so a client
takes ``size`` and the root from a checkpoint it trusts (its signature, a witness's
copy), not from the proof response alone.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.audit_reach import (
    AuditReach,
    own_patient,
    readable_audit_events,
    require_audit_events,
)
from medvault.access.denials import Denial, denied
from medvault.audit import repository
from medvault.audit import service as audit
from medvault.audit.access_history import AccessHistoryPage
from medvault.audit.access_history import page_for_patient as access_history_page
from medvault.audit.checkpoints import SignedCheckpoint
from medvault.audit.context import AuditContext
from medvault.audit.leaf import encode_event
from medvault.audit.merkle import MissingNodeError, leaf_hash, root_from_nodes
from medvault.audit.merkle_proofs import consistency_proof, inclusion_proof
from medvault.audit.models import AuditEvent
from medvault.audit.repository import EventFilters, StoredNodes
from medvault.audit.schemas import (
    AuditEventOut,
    AuditEventPage,
    CheckpointOut,
    ConsistencyProofOut,
    InclusionProofOut,
    SignedCheckpointOut,
)
from medvault.auth.principal import Principal
from medvault.crypto.signing_keys import SigningKey
from medvault.kit.i18n import N_, msg
from medvault.kit.keyset import InvalidCursor
from medvault.kit.problems import BadRequest, IntegrityFailure, NotFound
from medvault.patients.repository import get as patient_exists_row

READ_ACTION = "audit.read"
RESOURCE_TYPE = "audit_log"


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _record(session: Session, context: AuditContext, details: dict[str, Any], **extra: Any) -> None:
    audit.record(
        session=session,
        context=context,
        action=READ_ACTION,
        resource_type=RESOURCE_TYPE,
        details=details,
        **extra,
    )


def patient_exists(session: Session, patient_id: uuid.UUID) -> bool:
    return patient_exists_row(session, patient_id) is not None


def event_out(event: AuditEvent) -> AuditEventOut:
    sealed = event.leaf_index is not None
    return AuditEventOut(
        id=event.id,
        leaf_index=event.leaf_index,
        leaf_hash=_b64(leaf_hash(encode_event(event))) if sealed else None,
        occurred_at=event.occurred_at,
        actor_id=event.actor_id,
        actor_role=event.actor_role,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        patient_id=event.patient_id,
        outcome=event.outcome,
        client_ip=event.client_ip,
        user_agent=event.user_agent,
        request_id=event.request_id,
        details=event.details,
        break_glass=event.break_glass_reason is not None,
        break_glass_reason=event.break_glass_reason,
    )


def _before_id(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isascii() or not cursor.isdigit() or int(cursor) < 1:
        raise InvalidCursor(N_("Use the next_cursor value from a previous page as-is."))
    return int(cursor)


def list_events(
    *,
    session: Session,
    principal: Principal,
    context: AuditContext,
    filters: EventFilters,
    cursor: str | None,
    limit: int,
) -> AuditEventPage:
    """Newest first by id, with the id of the page's last event as the next cursor.

    Id order is the order events were written (occurred_at can differ by a few
    milliseconds between concurrent requests); a single-column keyset also walks
    each ``(filter column, id)`` index directly, however deep the page. The full
    representation is for whole-log readers: the route refuses anyone else first,
    and the query still starts from the caller's readable events.
    """
    events = repository.events_page(
        session,
        readable=readable_audit_events(principal),
        filters=filters,
        before_id=_before_id(cursor),
        limit=limit,
    )
    details: dict[str, Any] = {"view": "events", "returned": len(events)}
    for name in ("actor_id", "action", "occurred_after", "occurred_before"):
        value = getattr(filters, name)
        if value is not None:
            details[name] = value if isinstance(value, str) else value.isoformat()
    _record(session, context, details, patient_id=filters.patient_id)
    next_cursor = str(events[-1].id) if len(events) == limit else None
    return AuditEventPage(items=[event_out(event) for event in events], next_cursor=next_cursor)


def access_history(
    *,
    session: Session,
    auth_session: Session,
    principal: Principal,
    context: AuditContext,
    patient_id: uuid.UUID,
    cursor: str | None,
    limit: int,
) -> AccessHistoryPage:
    """The events about one patient's record, in the patient-facing projection.

    A patient principal reaches only its own record: another patient's id is the same
    404 as an unknown one (and the attempt is audited against that patient, so it
    shows in *their* history). Whole-log readers may read any patient's history.
    """
    reach = require_audit_events(principal)
    if reach is not AuditReach.WHOLE_LOG and own_patient(principal) != patient_id:
        problem = NotFound(N_("No patient with this id."))
        if patient_exists(session, patient_id):
            denied(problem, Denial(principal, "Patient", patient_id, patient_id, "audit:read"))
        raise problem
    page = access_history_page(
        session=session,
        auth_session=auth_session,
        principal=principal,
        patient_id=patient_id,
        before_id=_before_id(cursor),
        limit=limit,
    )
    _record(
        session,
        context,
        {"view": "access-history", "returned": len(page.items)},
        patient_id=patient_id,
    )
    return page


def checkpoint_out(checkpoint: SignedCheckpoint) -> CheckpointOut:
    return CheckpointOut(
        tree_size=checkpoint.tree_size,
        root_hash=_b64(checkpoint.root_hash),
        root_hash_hex=checkpoint.root_hash.hex(),
        created_at=checkpoint.created_at,
        key_id=checkpoint.key_id,
        signature=_b64(checkpoint.signature),
        note=checkpoint.note,
        signed_note=checkpoint.signed_note(),
    )


def _latest_size(session: Session) -> int:
    size = repository.latest_checkpoint_size(session)
    if size is None:
        raise NotFound(N_("The audit log has no signed checkpoint yet."))
    return size


def _checkpoint_at(session: Session, size: int) -> CheckpointOut | None:
    row = repository.checkpoint_at(session, size)
    return None if row is None else checkpoint_out(SignedCheckpoint.from_row(row))


def _not_signed_yet(size: int, latest: int) -> NotFound:
    return NotFound(
        msg(
            "The audit log has no signed checkpoint of {size} events yet (latest: {latest}).",
            size=size,
            latest=latest,
        )
    )


def latest_checkpoint(
    *, session: Session, context: AuditContext, key: SigningKey
) -> SignedCheckpointOut:
    row = repository.latest_checkpoint(session)
    if row is None:
        raise NotFound(N_("The audit log has no signed checkpoint yet."))
    _record(session, context, {"view": "checkpoint", "tree_size": row.tree_size})
    out = checkpoint_out(SignedCheckpoint.from_row(row))
    return SignedCheckpointOut(**out.model_dump(), public_key_pem=key.public_pem())


def inclusion(
    *, session: Session, context: AuditContext, index: int, size: int | None
) -> InclusionProofOut:
    latest = _latest_size(session)
    size = latest if size is None else size
    if size > latest:
        raise _not_signed_yet(size, latest)
    if index >= size:
        raise BadRequest(
            msg("Leaf index {index} is not in a tree of {size} events.", index=index, size=size)
        )
    reader = StoredNodes(session)
    try:
        path = inclusion_proof(index, size, reader)
        root = root_from_nodes(size, reader)
        leaf = reader.get_nodes([(0, index)]).get((0, index))
    except MissingNodeError as exc:
        raise IntegrityFailure(N_("The audit log's Merkle tree is incomplete.")) from exc
    if leaf is None:
        raise IntegrityFailure(N_("The audit log's Merkle tree is incomplete."))
    _record(session, context, {"view": "inclusion-proof", "leaf_index": index, "tree_size": size})
    return InclusionProofOut(
        leaf_index=index,
        tree_size=size,
        leaf_hash=_b64(leaf),
        audit_path=[_b64(value) for value in path],
        root_hash=_b64(root),
        checkpoint=_checkpoint_at(session, size),
    )


def consistency(
    *, session: Session, context: AuditContext, first: int, second: int | None
) -> ConsistencyProofOut:
    latest = _latest_size(session)
    second = latest if second is None else second
    if second > latest:
        raise _not_signed_yet(second, latest)
    if first > second:
        raise BadRequest(
            msg("first ({first}) must not exceed second ({second}).", first=first, second=second)
        )
    reader = StoredNodes(session)
    try:
        proof = consistency_proof(first, second, reader)
        first_root, second_root = root_from_nodes(first, reader), root_from_nodes(second, reader)
    except MissingNodeError as exc:
        raise IntegrityFailure(N_("The audit log's Merkle tree is incomplete.")) from exc
    _record(session, context, {"view": "consistency-proof", "first": first, "second": second})
    return ConsistencyProofOut(
        first=first,
        second=second,
        proof=[_b64(value) for value in proof],
        first_root=_b64(first_root),
        second_root=_b64(second_root),
        first_checkpoint=_checkpoint_at(session, first),
        second_checkpoint=_checkpoint_at(session, second),
    )
