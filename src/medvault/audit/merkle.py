"""RFC 6962 Merkle tree over the audit log, stored as aligned perfect subtrees.

The tree itself is never materialised. We persist only the hashes of *perfect*
subtrees aligned on their size: node ``(level, index)`` covers the leaves
``[index * 2**level, (index + 1) * 2**level)``, and level 0 holds the leaf hashes.
Such a node depends on nothing but its own leaves, so once written it never
changes however far the log grows: storage is append-only, like the log.

Every RFC 6962 subtree that a root or a proof needs is either one of these nodes
or sits on the right edge of a tree of size ``n``, where it splits into at most
``log2(n) + 1`` perfect subtrees (one per set bit of its size, largest first). So
any root or proof costs O(log n) stored lookups, fetched in one batch.

Proof generation and verification live in :mod:`medvault.audit.merkle_proofs`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Protocol, TypeAlias

HASH_SIZE: Final = 32

# RFC 6962 §2.1 domain separation: a leaf can never be passed off as an interior
# node (or the reverse), which is what stops second-preimage forgeries.
_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

NodeKey: TypeAlias = tuple[int, int]
"""``(level, index)`` of a perfect subtree of ``2**level`` leaves starting at leaf
``index * 2**level``."""

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256 of the empty string (RFC 6962 §2.1)."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d): the hash of one leaf's bytes."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


class MissingNodeError(LookupError):
    """The node store lacks a node that a tree of the requested size must have.

    This means the store and the claimed size disagree (a size larger than what
    was sealed, or lost rows): never something to paper over with a default.
    """

    def __init__(self, keys: Sequence[NodeKey]) -> None:
        self.keys = tuple(keys)
        shown = ", ".join(f"(level={level}, index={index})" for level, index in self.keys[:5])
        more = f" and {len(self.keys) - 5} more" if len(self.keys) > 5 else ""
        super().__init__(f"Merkle node store is missing {shown}{more}")


class NodeReader(Protocol):
    """Read access to stored perfect-subtree hashes."""

    def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """Return the hashes of those ``keys`` that are stored; absent keys are omitted.

        A batch, so that a database-backed reader answers a whole proof with one query.
        """
        ...


class MemoryNodeStore:
    """An in-memory node store, for tests and for a verifier rebuilding the tree."""

    def __init__(self) -> None:
        self._nodes: dict[NodeKey, bytes] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        nodes = self._nodes
        return {key: nodes[key] for key in keys if key in nodes}

    def put_nodes(self, nodes: Mapping[NodeKey, bytes]) -> None:
        """Store ``nodes``; rewriting a stored node with a different hash is refused.

        Perfect-subtree nodes are immutable once their leaves exist, so a conflicting
        write means two different logs are being mixed up. Rewriting the same value is
        allowed so that retrying a batch is harmless.
        """
        existing = self._nodes
        conflicts = [key for key in nodes.keys() & existing.keys() if nodes[key] != existing[key]]
        if conflicts:
            raise ValueError(f"refusing to overwrite Merkle nodes {sorted(conflicts)[:5]}")
        existing.update(nodes)


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"tree size must be >= 0, got {size}")


def right_edge_keys(size: int) -> list[NodeKey]:
    """Keys of the perfect subtrees that make up a tree of ``size`` leaves, left to right.

    One per set bit of ``size``, largest first: this is the "compact range" that
    :class:`TreeAppender` needs to resume appending, and the input to the root.
    """
    _check_size(size)
    keys: list[NodeKey] = []
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            # The subtree for this bit ends exactly at the prefix made of the bits
            # above and including it, so its index is that prefix count minus one.
            keys.append((level, (size >> level) - 1))
    return keys


def subtree_keys(start: int, end: int) -> list[NodeKey]:
    """Keys of the perfect subtrees that make up the RFC 6962 subtree ``D[start:end]``.

    Only valid for subtrees that RFC 6962's recursion produces: ``start`` is a
    multiple of a power of two that is at least ``end - start``. Then the pieces,
    taken largest first, are each aligned on their own size, and the subtree hash
    is their right fold (see :func:`hash_from_subtrees`).
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative leaf range [{start}, {end})")
    if start & ((1 << (end - start - 1).bit_length()) - 1):
        raise ValueError(f"[{start}, {end}) is not a subtree of an RFC 6962 tree")
    keys: list[NodeKey] = []
    while start < end:
        level = (end - start).bit_length() - 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def hash_from_subtrees(hashes: Sequence[bytes]) -> bytes:
    """Hash of a subtree from its perfect pieces (largest first), per RFC 6962's split.

    RFC 6962 splits a subtree of ``n`` leaves at the largest power of two below
    ``n``: the left part is the largest piece and the right part is recursively the
    rest, which is exactly a fold from the right.
    """
    if not hashes:
        raise ValueError("a subtree has at least one perfect piece")
    result = hashes[-1]
    for piece in reversed(hashes[:-1]):
        result = node_hash(piece, result)
    return result


def require_nodes(reader: NodeReader, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
    """Fetch ``keys`` in one batch, raising :class:`MissingNodeError` if any is absent."""
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}  # a one-leaf proof needs nothing; spare a database the round trip
    found = reader.get_nodes(unique)
    missing = [key for key in unique if key not in found]
    if missing:
        raise MissingNodeError(missing)
    return found


def root_from_nodes(size: int, reader: NodeReader) -> bytes:
    """MTH(D[0:size]) from at most ``log2(size) + 1`` stored nodes.

    ``size`` may be any size the store has reached, not only the latest one: older
    checkpoints are recomputed from the same immutable nodes. Size 0 gives
    :data:`EMPTY_ROOT` without touching the store.
    """
    keys = right_edge_keys(size)
    if not keys:
        return EMPTY_ROOT
    nodes = require_nodes(reader, keys)
    return hash_from_subtrees([nodes[key] for key in keys])


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes")
    return value


class TreeAppender:
    """Appends leaf hashes in O(1) amortised hashing and reports the nodes to persist.

    The only state is the tree size and the hashes of its right-edge perfect
    subtrees (one per set bit of the size, largest first). Appending a leaf works
    like incrementing a binary counter: each trailing 1-bit of the old size is a
    subtree of the same height as the carry, so the two merge into a new node one
    level up. On average a leaf creates two nodes (itself and one merge).

    The appender does no I/O. The caller persists the returned nodes in the same
    transaction that assigns the leaf indexes; if that transaction fails, the
    in-memory state is ahead of the store and must be rebuilt with :meth:`load`.
    """

    def __init__(self, size: int, right_edge: Sequence[bytes]) -> None:
        _check_size(size)
        if len(right_edge) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} right-edge subtrees, "
                f"got {len(right_edge)} hashes"
            )
        self._size = size
        self._edge = [_check_hash(value, "right-edge hash") for value in right_edge]

    @classmethod
    def load(cls, size: int, reader: NodeReader) -> TreeAppender:
        """Resume appending to the stored tree of ``size`` leaves (O(log n) lookups)."""
        keys = right_edge_keys(size)
        nodes = require_nodes(reader, keys)
        return cls(size, [nodes[key] for key in keys])

    @property
    def size(self) -> int:
        return self._size

    @property
    def right_edge(self) -> tuple[bytes, ...]:
        """Right-edge perfect-subtree hashes, largest first (matches :func:`right_edge_keys`)."""
        return tuple(self._edge)

    def append(self, leaf_hashes: Iterable[bytes]) -> dict[NodeKey, bytes]:
        """Append leaves (already hashed with :func:`leaf_hash`) in order.

        Returns every node that the batch completes, the level-0 leaves included:
        exactly the nodes that did not exist at the old size and do at the new one.
        The whole batch is checked before any of it is applied, so a bad hash leaves
        the appender unchanged.
        """
        batch = [_check_hash(value, "leaf hash") for value in leaf_hashes]
        new_nodes: dict[NodeKey, bytes] = {}
        edge = self._edge
        sha256 = hashlib.sha256
        prefix = _NODE_PREFIX
        size = self._size
        for current in batch:
            new_nodes[(0, size)] = current
            size += 1
            # Merge once per trailing 1-bit of the old size (= trailing 0-bit of the
            # new size); the merged node at ``level`` ends at the new size.
            level = 0
            carry = size
            while not carry & 1:
                current = sha256(prefix + edge.pop() + current).digest()
                level += 1
                carry >>= 1
                new_nodes[(level, carry - 1)] = current
            edge.append(current)
        self._size = size
        return new_nodes

    def root(self) -> bytes:
        """MTH of the tree at its current size, from the right edge alone."""
        if not self._edge:
            return EMPTY_ROOT
        return hash_from_subtrees(self._edge)
