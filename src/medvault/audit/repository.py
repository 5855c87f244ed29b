"""Every audit-log query: the sealer's work queue, Merkle nodes, checkpoints, listings.

Hot paths (sealing, verifying) select plain column tuples rather than ORM objects:
building a million ORM instances would cost more than everything else they do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Select, and_, bindparam, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from medvault.audit.leaf import LEAF_COLUMNS
from medvault.audit.merkle import NodeKey
from medvault.audit.models import AuditCheckpoint, AuditEvent, MerkleNode
from medvault.db.base import ClinicalBase

# An arbitrary constant ("mvsealer" in ASCII) for pg_try_advisory_xact_lock: at most
# one sealer in the whole cluster. Distinct from the migration lock's key.
SEALER_LOCK_KEY: Final = 0x6D767365616C6572

# Core tables (typed as Table, unlike ``Model.__table__``) for executemany statements.
_EVENTS = ClinicalBase.metadata.tables[AuditEvent.__tablename__]
_NODES = ClinicalBase.metadata.tables[MerkleNode.__tablename__]


# -- sealing -------------------------------------------------------------------------


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def try_lock_sealer(session: Session) -> bool:
    """Take the cluster-wide sealer lock for this transaction; False if another has it.

    PostgreSQL: a transaction-scoped advisory lock, released by commit or rollback, so
    a crashed sealer can never leave it held. SQLite needs nothing more: the session
    began with BEGIN IMMEDIATE, which already makes every writer wait its turn.
    """
    if not _is_postgres(session):
        return True
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(SEALER_LOCK_KEY))))


def latest_checkpoint_size(session: Session) -> int | None:
    return session.scalar(select(func.max(AuditCheckpoint.tree_size)))


def max_leaf_index(session: Session) -> int | None:
    return session.scalar(select(func.max(AuditEvent.leaf_index)))


def has_unsealed(session: Session) -> bool:
    return (
        session.scalar(select(_EVENTS.c.id).where(AuditEvent.leaf_index.is_(None)).limit(1))
        is not None
    )


def unsealed_batch(session: Session, *, limit: int) -> Sequence[Sequence[Any]]:
    """The oldest unsealed events by id, as :data:`LEAF_COLUMNS` tuples (partial index)."""
    query = (
        select(*LEAF_COLUMNS)
        .where(AuditEvent.leaf_index.is_(None))
        .order_by(_EVENTS.c.id)
        .limit(limit)
    )
    return session.connection().execute(query).all()


def _driver_connection(session: Session) -> Any:
    """The psycopg connection under ``session``, in the same transaction."""
    driver = session.connection().connection.driver_connection
    assert driver is not None
    return driver


# PostgreSQL: one statement joining against arrays, with binary parameters. An
# executemany costs a statement per row on the server; this costs one.
_PG_ASSIGN = (
    "UPDATE audit_events SET leaf_index = u.leaf "
    "FROM unnest(CAST(%(ids)b AS bigint[]), CAST(%(leaves)b AS bigint[])) AS u(id, leaf) "
    "WHERE audit_events.id = u.id"
)
_PG_COPY_NODES = 'COPY audit_merkle_nodes (level, "index", hash) FROM STDIN (FORMAT BINARY)'


@contextmanager
def assigning_leaf_indexes(
    session: Session, event_ids: Sequence[int], *, first: int
) -> Iterator[None]:
    """Give ``event_ids`` the consecutive leaf indexes ``first, first + 1, ...``.

    On PostgreSQL the UPDATE is sent in pipeline mode and only awaited when the block
    ends: the server maintains the table's six indexes (the sealer's biggest cost)
    while the block hashes on the client, so the two overlap on separate cores. Any
    error from the UPDATE is raised when the block ends, before anything commits.
    """
    leaves = range(first, first + len(event_ids))
    if not _is_postgres(session):
        # SQLite: sqlite3's executemany is a C loop over one prepared statement.
        statement = (
            update(_EVENTS)
            .where(_EVENTS.c.id == bindparam("event_id"))
            .values(leaf_index=bindparam("leaf"))
        )
        params = [
            {"event_id": event_id, "leaf": leaf}
            for event_id, leaf in zip(event_ids, leaves, strict=True)
        ]
        session.execute(statement, params)
        yield
        return
    driver = _driver_connection(session)
    with driver.pipeline(), driver.cursor() as cursor:
        cursor.execute(_PG_ASSIGN, {"ids": list(event_ids), "leaves": list(leaves)})
        yield


def insert_nodes(session: Session, nodes: Mapping[NodeKey, bytes]) -> None:
    if not nodes:
        return
    if _is_postgres(session):
        # COPY in binary: about three times faster than any INSERT for ~2 nodes per event.
        driver = _driver_connection(session)
        with driver.cursor() as cursor, cursor.copy(_PG_COPY_NODES) as copy:
            copy.set_types(["int2", "int8", "bytea"])
            for (level, index), value in nodes.items():
                copy.write_row((level, index, value))
        return
    rows = [{"level": key[0], "index": key[1], "hash": value} for key, value in nodes.items()]
    session.execute(insert(_NODES), rows)


def add_checkpoint(
    session: Session,
    *,
    tree_size: int,
    root_hash: bytes,
    created_at: datetime,
    key_id: str,
    signature: bytes,
) -> None:
    session.add(
        AuditCheckpoint(
            tree_size=tree_size,
            root_hash=root_hash,
            created_at=created_at,
            key_id=key_id,
            signature=signature,
        )
    )
    session.flush()


class StoredNodes:
    """The database's Merkle nodes as a :class:`~medvault.audit.merkle.NodeReader`."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        if not keys:
            return {}
        query = select(_NODES.c.level, _NODES.c.index, _NODES.c.hash).where(
            tuple_(_NODES.c.level, _NODES.c.index).in_(list(keys))
        )
        return {
            (level, index): value
            for level, index, value in self._session.connection().execute(query)
        }


# -- checkpoints ---------------------------------------------------------------------


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    return session.scalar(
        select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()).limit(1)
    )


def checkpoint_at(session: Session, tree_size: int) -> AuditCheckpoint | None:
    return session.get(AuditCheckpoint, tree_size)


def checkpoints_after(session: Session, tree_size: int, *, limit: int) -> list[AuditCheckpoint]:
    """A batch of checkpoints larger than ``tree_size``, smallest first (keyset walk)."""
    return list(
        session.scalars(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.tree_size > tree_size)
            .order_by(AuditCheckpoint.tree_size)
            .limit(limit)
        )
    )


# -- verification --------------------------------------------------------------------


def sealed_rows(session: Session, start: int, end: int) -> Sequence[Sequence[Any]]:
    """Events with ``start <= leaf_index < end``: :data:`LEAF_COLUMNS` then leaf_index."""
    query = (
        select(*LEAF_COLUMNS, AuditEvent.leaf_index)
        .where(AuditEvent.leaf_index >= start, AuditEvent.leaf_index < end)
        .order_by(AuditEvent.leaf_index)
    )
    return session.connection().execute(query).all()


def nodes_completed_by(session: Session, start: int, end: int) -> dict[NodeKey, bytes]:
    """Stored nodes that appending leaves ``[start, end)`` completes, leaves included.

    Node ``(level, index)`` is completed by leaf ``(index + 1) * 2**level - 1``, so at
    each level these are the indexes ``start >> level`` to ``(end >> level) - 1``: one
    primary-key range per level, all in one statement.
    """
    ranges = []
    for level in range(end.bit_length()):
        low, high = start >> level, (end >> level) - 1
        if low <= high:
            ranges.append(
                and_(_NODES.c.level == level, _NODES.c.index >= low, _NODES.c.index <= high)
            )
    if not ranges:
        return {}
    query = select(_NODES.c.level, _NODES.c.index, _NODES.c.hash).where(or_(*ranges))
    return {(level, index): value for level, index, value in session.connection().execute(query)}


def count_nodes(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(_NODES)) or 0


def leaf_position(session: Session, leaf_hash: bytes) -> int | None:
    """Where a leaf hash is stored at level 0, if anywhere (a scan: diagnosis only)."""
    return session.scalar(
        select(_NODES.c.index).where(_NODES.c.level == 0, _NODES.c.hash == leaf_hash).limit(1)
    )


def outside_tree(session: Session, tree_size: int) -> tuple[int, int | None]:
    """How many events carry a leaf index outside ``[0, tree_size)``, and the lowest."""
    outside = or_(AuditEvent.leaf_index < 0, AuditEvent.leaf_index >= tree_size)
    count, lowest = session.execute(
        select(func.count(), func.min(AuditEvent.leaf_index)).where(outside)
    ).one()
    return int(count), lowest


def unsealed_counts(session: Session) -> tuple[int, int]:
    """Unsealed events, and how many of them have a smaller id than some sealed event."""
    max_sealed_id = select(func.max(_EVENTS.c.id)).where(AuditEvent.leaf_index.is_not(None))
    unsealed = AuditEvent.leaf_index.is_(None)
    count = session.scalar(select(func.count()).where(unsealed)) or 0
    late = (
        session.scalar(
            select(func.count()).where(unsealed, _EVENTS.c.id < max_sealed_id.scalar_subquery())
        )
        or 0
    )
    return count, late


# -- the audit API -------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilters:
    patient_id: uuid.UUID | None = None
    actor_id: str | None = None
    action: str | None = None
    occurred_after: datetime | None = None
    occurred_before: datetime | None = None
    # Only events made under break-glass (they carry its reason).
    emergency_only: bool = False
    # Leave out one actor's events: an auditor hiding their own reads of the log.
    excluded_actor_id: str | None = None


def events_page(
    session: Session,
    *,
    readable: Select[AuditEvent],
    filters: EventFilters,
    before_id: int | None,
    limit: int,
) -> list[AuditEvent]:
    """Newest first by id; each equality filter has an ``(column, id)`` index to walk.

    ``readable`` is the caller's ``access.audit_reach.readable_audit_events``.
    """
    query = readable
    if filters.patient_id is not None:
        query = query.where(AuditEvent.patient_id == filters.patient_id)
    if filters.actor_id is not None:
        query = query.where(AuditEvent.actor_id == filters.actor_id)
    if filters.action is not None:
        query = query.where(AuditEvent.action == filters.action)
    if filters.occurred_after is not None:
        query = query.where(AuditEvent.occurred_at >= filters.occurred_after)
    if filters.occurred_before is not None:
        query = query.where(AuditEvent.occurred_at < filters.occurred_before)
    if filters.emergency_only:
        # Walks ix_audit_events_break_glass, which holds only such events.
        query = query.where(AuditEvent.break_glass_reason.is_not(None))
    if filters.excluded_actor_id is not None:
        query = query.where(AuditEvent.actor_id != filters.excluded_actor_id)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))
