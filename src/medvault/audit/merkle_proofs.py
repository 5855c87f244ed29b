"""RFC 6962 inclusion and consistency proofs: generation from stored nodes, and verification.

Generation walks RFC 6962's recursion (§2.1.1 PATH, §2.1.2 PROOF) as plain
arithmetic on leaf ranges, turns every range into its perfect-subtree node keys
and fetches them all in one :meth:`~medvault.audit.merkle.NodeReader.get_nodes`
call. Verification (RFC 9162 §2.1.3.2 and §2.1.4.2) uses nothing but its
arguments, so an auditor can run it without any access to our storage.

Size conventions, chosen because an empty tree commits to nothing:

* there is no inclusion proof in a tree of size 0 (every index is out of range);
* a consistency proof needs ``0 < first <= second``. RFC 6962's SUBPROOF is not
  defined for ``first = 0`` and RFC 9162 only defines proofs for ``0 < first``;
  ``consistency_proof`` raises and ``verify_consistency`` returns False there.
  ``first == second`` yields the empty proof (RFC 6962's ``SUBPROOF(n, D[n], true)``)
  and verifies only if the two roots are equal.
"""

from __future__ import annotations

from collections.abc import Sequence

from medvault.audit.merkle import (
    HASH_SIZE,
    NodeReader,
    hash_from_subtrees,
    node_hash,
    require_nodes,
    subtree_keys,
)

_LeafRange = tuple[int, int]


def _split(size: int) -> int:
    """Largest power of two strictly below ``size`` (RFC 6962's k), for size >= 2."""
    return 1 << ((size - 1).bit_length() - 1)


def _inclusion_ranges(index: int, size: int) -> list[_LeafRange]:
    """Leaf ranges of PATH(index, D[size]), from the leaf's sibling up to the root's child."""
    ranges: list[_LeafRange] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def _consistency_ranges(first: int, second: int) -> list[_LeafRange]:
    """Leaf ranges of PROOF(first, D[second]) = SUBPROOF(first, D[second], true)."""
    ranges: list[_LeafRange] = []
    lo, hi = 0, second
    remaining = first  # RFC 6962's m, relative to lo
    whole_old_tree = True  # RFC 6962's b: is D[lo:lo+m] the entire old tree?
    while remaining != hi - lo:
        mid = lo + _split(hi - lo)
        if remaining <= mid - lo:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            remaining -= mid - lo
            lo = mid
            whole_old_tree = False
    if not whole_old_tree:
        # The verifier knows the old root but not this subtree of it, so it is sent.
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def _hashes_for(ranges: Sequence[_LeafRange], reader: NodeReader) -> list[bytes]:
    keys_per_range = [subtree_keys(lo, hi) for lo, hi in ranges]
    nodes = require_nodes(reader, [key for keys in keys_per_range for key in keys])
    return [hash_from_subtrees([nodes[key] for key in keys]) for keys in keys_per_range]


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """PATH(index, D[size]) of RFC 6962 §2.1.1, ordered from the leaf upwards.

    ``size`` may be any size the store has reached. Raises ValueError unless
    ``0 <= index < size``, and MissingNodeError if the store has not reached ``size``.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    return _hashes_for(_inclusion_ranges(index, size), reader)


def consistency_proof(first: int, second: int, reader: NodeReader) -> list[bytes]:
    """PROOF(first, D[second]) of RFC 6962 §2.1.2; empty when ``first == second``.

    Raises ValueError unless ``0 < first <= second`` (see the module docstring for
    why size 0 is excluded), and MissingNodeError if the store has not reached ``second``.
    """
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    return _hashes_for(_consistency_ranges(first, second), reader)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_proof(value: object) -> bool:
    return isinstance(value, Sequence) and all(_is_hash(element) for element in value)


def _is_size(value: object) -> bool:
    # bool is an int subclass; True as a tree size is a caller bug, not a size of 1.
    return isinstance(value, int) and not isinstance(value, bool)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows ``leaf_hash`` is leaf ``index`` of the tree ``root`` of ``size``.

    RFC 9162 §2.1.3.2. Never raises: anything malformed (wrong types, hash lengths,
    proof length, out-of-range index) is simply not a valid proof.
    """
    if not (_is_hash(leaf_hash) and _is_hash(root) and _is_size(index) and _is_size(size)):
        return False
    if not 0 <= index < size or not _is_proof(proof):
        return False
    fn, sn = index, size - 1
    result = leaf_hash
    for element in proof:
        if sn == 0:
            return False  # more proof than tree height
        if fn & 1 or fn == sn:
            result = node_hash(element, result)
            # Levels where this node has no right sibling (the right edge) are
            # promoted unchanged in RFC 6962 trees, so they consume no proof element.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, element)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows that tree ``second_root`` (size ``second``) extends ``first_root``.

    RFC 9162 §2.1.4.2, plus ``first == second`` (empty proof, equal roots). Never
    raises; ``first == 0`` is never valid (see the module docstring).
    """
    if not (
        _is_size(first) and _is_size(second) and _is_hash(first_root) and _is_hash(second_root)
    ):
        return False
    if not 0 < first <= second or not _is_proof(proof):
        return False
    if first == second:
        return len(proof) == 0 and first_root == second_root
    if len(proof) == 0:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        # A power-of-two old tree is itself a node of the new tree, so the proof
        # leaves it out and the verifier starts from the old root it already has.
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for element in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(element, fr)
            sr = node_hash(element, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, element)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root
