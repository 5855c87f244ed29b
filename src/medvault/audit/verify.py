"""``audit verify``: recompute the whole log and name the first thing that is wrong.

One pass over the sealed events in leaf order, in batches, so memory stays flat:

* every row's leaf hash is recomputed from its columns and compared with the stored
  level-0 node: a difference is an **edited** row, or a **reordered** one when the
  hash belongs at another index; a leaf index with no row is a **deleted** row;
* the tree is rebuilt from the stored leaves and every stored node is compared (a
  rewritten node table is caught even where the rows look fine);
* at every checkpoint size the rebuilt root is compared with the signed root, and
  every signature is checked with the vault's audit key (an unknown key id fails:
  a forger without the key would otherwise just invent one);
* every checkpoint in the witness directory is compared too: a witnessed size the
  database no longer reaches is **truncation**, a different root is a **rewrite**;
* events with a leaf index outside the signed tree were **inserted**.

Unsealed events are counted, not judged: the sealer has not reached them yet. One
that committed after later events were sealed is normal (see :mod:`~.sealer`). An
event inserted *without* a leaf index is indistinguishable from a new one; the log's
guarantee covers what has been sealed.

The whole pass reads one snapshot (REPEATABLE READ on PostgreSQL, a WAL read
transaction on SQLite), so a sealer working meanwhile cannot make it report nonsense.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from medvault.audit import repository
from medvault.audit.checkpoints import (
    MalformedCheckpoint,
    SignedCheckpoint,
    WitnessDirectory,
    parse_signed_note,
)
from medvault.audit.leaf import LEAF_COLUMNS, event_leaf_hash
from medvault.audit.merkle import EMPTY_ROOT, HASH_SIZE, hash_from_subtrees, node_hash
from medvault.crypto.signing_keys import SigningKey
from medvault.runtime import Runtime

DEFAULT_BATCH_SIZE = 10_000
MAX_LISTED = 100  # findings kept in the report; every one is counted
_CLASSIFIED = 20  # edited-vs-reordered lookups scan the leaves, so only for the first few
_FIELDS = len(LEAF_COLUMNS)
_UNKNOWN_LEAF = bytes(HASH_SIZE)  # stands in for a leaf whose row and node are both gone


class Kind(StrEnum):
    EDITED = "edited"
    REORDERED = "reordered"
    DELETED = "deleted"
    INSERTED = "inserted"
    NODE = "node"
    CHECKPOINT = "checkpoint"
    SIGNATURE = "signature"
    TRUNCATED = "truncated"
    REWRITTEN = "rewritten"
    WITNESS = "witness"


@dataclass(frozen=True)
class Finding:
    kind: Kind
    message: str
    index: int | None = None
    """The first leaf index affected (a lower bound when only a range is known)."""


@dataclass
class AuditReport:
    tree_size: int = 0
    sealed: int = 0
    """Events that carry a leaf index (inside the signed tree or not)."""
    unsealed: int = 0
    unsealed_late: int = 0
    """Unsealed events older (by id) than a sealed one: committed late, which is fine."""
    checkpoints: int = 0
    witness_files: int = 0
    witness_dir: Path | None = None
    findings: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    first_bad: Finding | None = None

    @property
    def healthy(self) -> bool:
        return not self.counts

    @property
    def first_bad_index(self) -> int | None:
        return self.first_bad.index if self.first_bad is not None else None

    def add(self, finding: Finding) -> None:
        self.counts[finding.kind.value] += 1
        if len(self.findings) < MAX_LISTED:
            self.findings.append(finding)
        if self.first_bad is None or _rank(finding) < _rank(self.first_bad):
            self.first_bad = finding

    def summary(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "tree_size": self.tree_size,
            "sealed": self.sealed,
            "unsealed": self.unsealed,
            "unsealed_committed_late": self.unsealed_late,
            "checkpoints": self.checkpoints,
            "witness_files": self.witness_files,
            "first_bad_index": self.first_bad_index,
            "first_bad": None if self.first_bad is None else _finding_dict(self.first_bad),
            "problems": dict(self.counts),
        }


# A root that does not match bounds the damage to a range of leaves; a leaf or node
# finding names the exact spot, so it is the better "first bad index" when both exist.
_RANGE_KINDS = frozenset({Kind.CHECKPOINT, Kind.REWRITTEN})


def _rank(finding: Finding) -> tuple[bool, bool, int]:
    return (finding.index is None, finding.kind in _RANGE_KINDS, finding.index or 0)


def _finding_dict(finding: Finding) -> dict[str, Any]:
    return {"kind": finding.kind.value, "index": finding.index, "message": finding.message}


class _Targets:
    """Sizes at which the rebuilt root must be compared: checkpoints and witness files."""

    def __init__(self, session: Session, witness: list[tuple[int, Path]]) -> None:
        self._session = session
        self._checkpoints: list[SignedCheckpoint] = []
        self._after = -1
        self.witness = witness
        self._w = 0

    def _refill(self) -> None:
        rows = repository.checkpoints_after(self._session, self._after, limit=1000)
        self._checkpoints = [SignedCheckpoint.from_row(row) for row in reversed(rows)]
        if rows:
            self._after = rows[-1].tree_size

    def next_size(self) -> int | None:
        if not self._checkpoints:
            self._refill()
        sizes = []
        if self._checkpoints:
            sizes.append(self._checkpoints[-1].tree_size)
        if self._w < len(self.witness):
            sizes.append(self.witness[self._w][0])
        return min(sizes) if sizes else None

    def take(self, size: int) -> Iterator[SignedCheckpoint | Path]:
        while self._checkpoints and self._checkpoints[-1].tree_size == size:
            yield self._checkpoints.pop()
        while self._w < len(self.witness) and self.witness[self._w][0] == size:
            yield self.witness[self._w][1]
            self._w += 1


class _Verifier:
    def __init__(self, session: Session, key: SigningKey, report: AuditReport) -> None:
        self.session = session
        self.key = key
        self.report = report
        self.size = 0
        self.edge: list[bytes] = []  # right-edge subtree hashes, as TreeAppender keeps them
        self.edge_bad: list[bool] = []  # whether a problem was already reported below each
        self.bad_leaves: set[int] = set()  # leaves of the current batch already reported
        # The largest sizes whose signed roots matched so far: leaves below are genuine.
        self.last_good_checkpoint = self.last_good_witness = 0
        self.mismatches = 0

    # -- leaves and nodes ------------------------------------------------------------

    def leaf_batch(self, start: int, end: int) -> tuple[list[bytes], dict[Any, bytes]]:
        """Check rows ``[start, end)`` against their leaves; returns leaves and stored nodes."""
        rows = repository.sealed_rows(self.session, start, end)
        stored = repository.nodes_completed_by(self.session, start, end)
        by_index: dict[int, Any] = {}
        self.report.sealed += len(rows)
        for row in rows:
            index = row[_FIELDS]
            if index in by_index:
                self.report.add(
                    Finding(Kind.REORDERED, f"two events have leaf index {index}", index)
                )
            by_index[index] = row
        leaves: list[bytes] = []
        for index in range(start, end):
            found = by_index.get(index)
            stored_leaf = stored.get((0, index))
            if found is None:
                message = f"no event has leaf index {index}: deleted"
                self.report.add(Finding(Kind.DELETED, message, index))
                leaves.append(stored_leaf or _UNKNOWN_LEAF)
                self.bad_leaves.add(index)
                continue
            computed = event_leaf_hash(found[:_FIELDS])
            if stored_leaf is None:
                self.report.add(Finding(Kind.NODE, f"the leaf node {index} is missing", index))
                self.bad_leaves.add(index)
            elif computed != stored_leaf:
                self.mismatch(index, found[0], computed)
                self.bad_leaves.add(index)
            leaves.append(stored_leaf or computed)
        return leaves, stored

    def mismatch(self, index: int, event_id: int, computed: bytes) -> None:
        self.mismatches += 1
        sealed_at = None
        if self.mismatches <= _CLASSIFIED:
            sealed_at = repository.leaf_position(self.session, computed)
        if sealed_at is not None and sealed_at != index:
            message = f"event {event_id} was sealed as leaf {sealed_at} but now has index {index}"
            self.report.add(Finding(Kind.REORDERED, message + ": reordered", index))
        else:
            message = (
                f"event {event_id} at leaf {index} does not match its sealed leaf hash: "
                "the row (or its leaf node) was edited"
            )
            self.report.add(Finding(Kind.EDITED, message, index))

    def append(self, leaves: list[bytes], stored: dict[Any, bytes]) -> None:
        """Walk the stored tree like TreeAppender, checking each node against its children.

        Each stored node is compared with the hash of its two *stored* children, and the
        stored value is carried on. So a bad node is reported once, at its own level,
        instead of also failing every ancestor above it; and the roots compared with
        the checkpoints are those of the stored tree, which is what proofs are built from.
        """
        edge, edge_bad, size = self.edge, self.edge_bad, self.size
        for leaf in leaves:
            current, below = leaf, size in self.bad_leaves
            size += 1
            level, carry = 0, size
            while not carry & 1:
                computed = node_hash(edge.pop(), current)
                below = edge_bad.pop() or below
                level += 1
                carry >>= 1
                held = stored.get((level, carry - 1))
                if held == computed:
                    below = False  # consistent with its children: nothing to explain above
                elif held is None or not below:
                    self.bad_node(level, carry - 1, held is None)
                    below = True
                # else: a child already reported explains this mismatch, and one altered
                # node must not be blamed on every node above it as well.
                current = computed if held is None else held
            edge.append(current)
            edge_bad.append(below)
        self.size = size
        self.bad_leaves.clear()

    def bad_node(self, level: int, index: int, missing: bool) -> None:
        first_leaf = index << level
        if missing:
            message = f"Merkle node (level {level}, index {index}) is missing"
        else:
            message = (
                f"Merkle node (level {level}, index {index}) is not the hash of its children "
                f"(leaves {first_leaf}..{first_leaf + (1 << level) - 1}): nodes were rewritten"
            )
        self.report.add(Finding(Kind.NODE, message, first_leaf))

    def root(self) -> bytes:
        return hash_from_subtrees(self.edge) if self.edge else EMPTY_ROOT

    # -- roots -----------------------------------------------------------------------

    def check_signature(self, checkpoint: SignedCheckpoint, where: str, kind: Kind) -> bool:
        if checkpoint.key_id != self.key.key_id:
            message = f"{where} is signed by unknown key id {checkpoint.key_id!r}"
        elif not checkpoint.verify(self.key.public_key):
            message = f"{where} has an invalid signature"
        else:
            return True
        self.report.add(Finding(kind, message))
        return False

    def check_root(self, target: SignedCheckpoint | Path, root: bytes) -> None:
        """Compare a signed root (a checkpoint row or a witness file) with the stored tree's.

        A mismatch only bounds the damage to the leaves after the last size that did
        match. A witness outranks the database: a rebuilt log comes with freshly signed
        checkpoints of its own, so a rewrite is bounded by the last *witnessed* match.
        """
        size = self.size
        if isinstance(target, SignedCheckpoint):
            self.report.checkpoints += 1
            signed = self.check_signature(target, f"checkpoint {size}", Kind.SIGNATURE)
            kind, what, checkpoint = (
                Kind.CHECKPOINT,
                f"the signed checkpoint at size {size}",
                target,
            )
            good_from = max(self.last_good_checkpoint, self.last_good_witness)
        else:
            self.report.witness_files += 1
            loaded = self.witness_file(target, size)
            if loaded is None:
                return
            kind, what, checkpoint = Kind.REWRITTEN, f"witness file {target.name}", loaded
            signed = True  # witness_file() only returns checkpoints with a good signature
            good_from = self.last_good_witness
        if checkpoint.root_hash != root:
            message = (
                f"{what} has a different root than the stored log of that size: "
                f"leaves {good_from}..{size - 1} (or their nodes) were rewritten"
            )
            self.report.add(Finding(kind, message, good_from))
        elif signed and kind is Kind.CHECKPOINT:
            self.last_good_checkpoint = size
        elif signed:
            self.last_good_witness = size

    def witness_file(self, path: Path, size: int | None) -> SignedCheckpoint | None:
        try:
            checkpoint = parse_signed_note(path.read_text("utf-8"))
        except (OSError, UnicodeError, MalformedCheckpoint) as exc:
            self.report.add(Finding(Kind.WITNESS, f"witness file {path.name}: {exc}"))
            return None
        if size is not None and checkpoint.tree_size != size:
            self.report.add(Finding(Kind.WITNESS, f"witness file {path.name} names another size"))
            return None
        if not self.check_signature(checkpoint, f"witness file {path.name}", Kind.WITNESS):
            return None
        return checkpoint


def _witness_entries(verifier: _Verifier, witness: WitnessDirectory) -> list[tuple[int, Path]]:
    entries = witness.checkpoint_files()
    if witness.latest_path.is_file():
        latest = verifier.witness_file(witness.latest_path, None)
        if latest is not None:
            entries.append((latest.tree_size, witness.latest_path))
        else:
            verifier.report.witness_files += 1
    return sorted(entries)


def verify_log(
    *,
    runtime: Runtime,
    witness_dir: Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Check every sealed event, node, checkpoint and witnessed checkpoint."""
    witness = WitnessDirectory(witness_dir or runtime.settings.witness_dir)
    report = AuditReport(witness_dir=witness.path)
    with runtime.clinical.read_session() as session:
        if not runtime.clinical.is_sqlite:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        verifier = _Verifier(session, runtime.audit_key, report)
        size = report.tree_size = repository.latest_checkpoint_size(session) or 0
        entries = _witness_entries(verifier, witness)
        targets = _Targets(session, [entry for entry in entries if entry[0] <= size])
        targets.next_size()  # loads the first checkpoints
        for target in targets.take(0):
            verifier.check_root(target, EMPTY_ROOT)
        for start in range(0, size, batch_size):
            end = min(start + batch_size, size)
            leaves, stored = verifier.leaf_batch(start, end)
            position = start
            while position < end:
                # Append up to the next size that has a root to compare, then compare it.
                stop = targets.next_size()
                stop = end if stop is None or stop > end else stop
                verifier.append(leaves[position - start : stop - start], stored)
                position = stop
                for target in targets.take(stop):
                    verifier.check_root(target, verifier.root())
            if on_progress is not None:
                on_progress(end, size)
        _check_beyond(verifier, size, [entry for entry in entries if entry[0] > size])
        report.unsealed, report.unsealed_late = repository.unsealed_counts(session)
    return report


def _check_beyond(verifier: _Verifier, size: int, witnessed: list[tuple[int, Path]]) -> None:
    """What lies outside the signed tree: witnessed larger trees, rows, extra nodes."""
    report, session = verifier.report, verifier.session
    for witnessed_size, path in witnessed:
        report.witness_files += 1
        checkpoint = verifier.witness_file(path, None if path.name == "latest" else witnessed_size)
        if checkpoint is not None:
            message = (
                f"witness file {path.name} saw {witnessed_size} events but the log has only "
                f"{size}: leaves {size}..{witnessed_size - 1} were removed (truncated)"
            )
            report.add(Finding(Kind.TRUNCATED, message, size))
    outside, lowest = repository.outside_tree(session, size)
    report.sealed += outside
    if outside:
        message = (
            f"{outside} event(s) carry leaf indexes outside the signed tree of size {size}, "
            f"from {lowest}: inserted (or their checkpoint was deleted)"
        )
        report.add(Finding(Kind.INSERTED, message, lowest))
    expected = sum(size >> level for level in range(size.bit_length()))
    stored = repository.count_nodes(session)
    if stored > expected:
        message = f"{stored - expected} Merkle node(s) lie beyond the signed tree of size {size}"
        report.add(Finding(Kind.NODE, message, size))
