"""The audit sealer: gives new events leaf indexes, grows the Merkle tree, signs checkpoints.

Events are written unsealed (``leaf_index`` NULL) in the same transaction as what they
record, so recording never waits for the tree. The sealer then works in short
transactions of at most ``batch_size`` events, each of which:

1. takes the cluster-wide sealer lock (PostgreSQL advisory lock; SQLite's
   BEGIN IMMEDIATE is already exclusive), or returns at once if another has it;
2. reads the tree size from the latest checkpoint and checks it against the highest
   leaf index, refusing to build on a log that is not what it signed;
3. takes the oldest unsealed events by id, gives them the next consecutive indexes,
   appends their leaf hashes, and inserts the new perfect-subtree nodes;
4. writes one signed checkpoint for the new size, and commits all of it at once.

So leaf indexes, nodes and checkpoints can never disagree after a crash: they are
committed together or not at all. The checkpoint is exported to the witness
directory after the commit, so a witness never holds a checkpoint the database lost.

**Ordering.** With concurrent writers, an event can commit after an event with a
larger id has been sealed (ids are handed out at insert, visibility comes at commit).
It then simply gets a later leaf index: the leaf order is the order the sealer first
saw events, not id order, and ``audit verify`` does not treat that as tampering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from medvault.audit import repository
from medvault.audit.checkpoints import SignedCheckpoint, WitnessDirectory, sign_checkpoint
from medvault.audit.leaf import event_leaf_hash
from medvault.audit.merkle import TreeAppender
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 5000


class SealerError(RuntimeError):
    """Sealing was refused because the stored log is not in a state it can extend."""


@dataclass(frozen=True)
class SealResult:
    sealed: int
    """Events given a leaf index by this call."""
    tree_size: int
    """The tree size this call last saw (after its own batches)."""
    checkpoints: int
    """Signed checkpoints written (one per batch)."""
    busy: bool = False
    """Another sealer held the lock, so this call did nothing more."""


@dataclass(frozen=True)
class _Batch:
    sealed: int
    tree_size: int
    checkpoint: SignedCheckpoint | None
    busy: bool = False


def _tree_size(witness: WitnessDirectory, size: int | None, top: int | None) -> int:
    """The size to extend, after checking the store and the witness agree with it."""
    tree_size = size or 0
    if (top if top is not None else -1) + 1 != tree_size:
        raise SealerError(
            f"the latest signed checkpoint has size {tree_size} but the highest leaf index "
            f"is {top}; sealing stopped. Run `medvault audit verify`."
        )
    witnessed = witness.latest()
    if witnessed is not None and witnessed.tree_size > tree_size:
        # Growing a truncated log would hide the truncation under new checkpoints.
        raise SealerError(
            f"the witness in {witness.path} saw size {witnessed.tree_size} but the database "
            f"has only {tree_size}; sealing stopped. Run `medvault audit verify`."
        )
    return tree_size


def _seal_batch(runtime: Runtime, witness: WitnessDirectory, batch_size: int) -> _Batch:
    with runtime.clinical.session() as session:
        if not repository.try_lock_sealer(session):
            session.rollback()
            return _Batch(0, 0, None, busy=True)
        size = _tree_size(
            witness,
            repository.latest_checkpoint_size(session),
            repository.max_leaf_index(session),
        )
        rows = repository.unsealed_batch(session, limit=batch_size)
        if not rows:
            session.rollback()
            return _Batch(0, size, None)
        appender = TreeAppender.load(size, repository.StoredNodes(session))
        with repository.assigning_leaf_indexes(session, [row[0] for row in rows], first=size):
            nodes = appender.append([event_leaf_hash(row) for row in rows])
        repository.insert_nodes(session, nodes)
        checkpoint = sign_checkpoint(
            key=runtime.audit_key,
            tree_size=appender.size,
            root_hash=appender.root(),
            created_at=utcnow(),
        )
        repository.add_checkpoint(
            session,
            tree_size=checkpoint.tree_size,
            root_hash=checkpoint.root_hash,
            created_at=checkpoint.created_at,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
        )
        session.commit()
    return _Batch(len(rows), checkpoint.tree_size, checkpoint)


def _export(witness: WitnessDirectory, checkpoint: SignedCheckpoint) -> None:
    try:
        witness.record(checkpoint)
    except Exception as exc:
        # The checkpoint is committed and signed; a missing copy is worth an alarm, not
        # a stop. The next checkpoint's export carries the log's growth forward anyway.
        logger.error(
            "could not write audit checkpoint %d to the witness directory %s: %s",
            checkpoint.tree_size,
            witness.path,
            exc,
        )


def seal_pending(
    *,
    runtime: Runtime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    should_stop: Callable[[], bool] | None = None,
) -> SealResult:
    """Seal every event that is waiting, one short transaction per batch.

    Returns early if another sealer holds the lock (it will seal them) or once
    ``should_stop()`` is true between batches. Raises :class:`SealerError` if the
    stored log is inconsistent.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    witness = WitnessDirectory(runtime.settings.witness_dir)
    with runtime.clinical.read_session() as session:
        # A read first: on SQLite, an idle vault then never takes the write lock.
        if not repository.has_unsealed(session):
            return SealResult(0, repository.latest_checkpoint_size(session) or 0, 0)
    sealed = checkpoints = 0
    size = 0
    while True:
        batch = _seal_batch(runtime, witness, batch_size)
        if batch.busy:
            return SealResult(sealed, size, checkpoints, busy=True)
        size = batch.tree_size
        if batch.checkpoint is not None:
            _export(witness, batch.checkpoint)
            sealed += batch.sealed
            checkpoints += 1
        if batch.sealed < batch_size or (should_stop is not None and should_stop()):
            return SealResult(sealed, size, checkpoints)


# -- the background loop -------------------------------------------------------------


async def run_sealer(runtime: Runtime, stop: asyncio.Event) -> None:
    """Seal every ``audit_seal_interval_seconds`` until ``stop`` is set. Never dies.

    Errors are logged by type only: database exceptions quote the statement's
    parameters, which here are audit event contents, and those stay out of logs.
    """
    interval = runtime.settings.audit_seal_interval_seconds
    while not stop.is_set():
        try:
            await asyncio.to_thread(seal_pending, runtime=runtime, should_stop=stop.is_set)
        except SealerError as exc:
            logger.error("audit sealing refused: %s", exc)
        except Exception as exc:
            logger.error("audit sealing failed (%s); retrying", type(exc).__name__)
            logger.debug("".join(traceback.format_tb(exc.__traceback__)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


@dataclass
class SealerHandle:
    """A running background sealer; ``await handle.stop()`` finishes its current batch."""

    _stop: asyncio.Event
    _task: asyncio.Task[None]

    async def stop(self) -> None:
        self._stop.set()
        await self._task


def start_sealer(runtime: Runtime) -> SealerHandle:
    """Start :func:`run_sealer` on the running event loop (call from the app lifespan)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_sealer(runtime, stop), name="medvault-audit-sealer")
    return SealerHandle(stop, task)
