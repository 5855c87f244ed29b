"""Synthetic events for the tamper-evident audit log, and an independent Merkle root.

The events vary every field the leaf encoding covers (actors, patients, break-glass
reasons, non-ASCII details), so a sealing or proof test sees realistic leaves.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from sqlalchemy import select

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.leaf import encode_event
from medvault.audit.models import AuditEvent
from medvault.runtime import Runtime

PATIENTS = [uuid.UUID(int=n) for n in range(1, 4)]
ACTORS = [f"user:{uuid.UUID(int=100 + n)}" for n in range(3)]
GLASS_REASON = "Unconscious patient, no next of kin reachable"


def context(n: int) -> AuditContext:
    """The request context of synthetic event ``n``: actors rotate, some break the glass."""
    return AuditContext(
        actor_id=ACTORS[n % len(ACTORS)],
        actor_role="clinician",
        client_ip=f"10.0.0.{n % 250}",
        user_agent="pytest/1.0 (synthetic)",
        request_id=f"req-{n:08d}",
        break_glass_reason=GLASS_REASON if n % 11 == 5 else None,
    )


def add_events(runtime: Runtime, count: int, *, first: int = 0) -> list[int]:
    """Record ``count`` varied synthetic events in one transaction; returns their ids."""
    with runtime.clinical.session() as session:
        events = [
            audit.record(
                session=session,
                context=context(n),
                action=("document.read", "document.upload", "patient.read")[n % 3],
                resource_type="Document",
                resource_id=uuid.UUID(int=10_000 + n),
                patient_id=PATIENTS[n % len(PATIENTS)] if n % 4 else None,
                details={"n": n, "note": "naïve ü ✓", "nested": {"b": 1, "a": [1, 2.5, None]}},
            )
            for n in range(first, first + count)
        ]
        session.commit()
        return [event.id for event in events]


def sealed_events(runtime: Runtime) -> list[AuditEvent]:
    """Sealed events in leaf order."""
    with runtime.clinical.read_session() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.leaf_index.is_not(None))
                .order_by(AuditEvent.leaf_index)
            )
        )


def naive_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH by its recursive definition, independent of medvault.audit.merkle."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(
        b"\x01" + naive_root(leaves[:split]) + naive_root(leaves[split:])
    ).digest()


def naive_roots(runtime: Runtime) -> list[bytes]:
    """``naive_roots(rt)[n]`` is the root of the first ``n`` sealed events."""
    leaves = [encode_event(event) for event in sealed_events(runtime)]
    return [naive_root(leaves[:n]) for n in range(len(leaves) + 1)]
