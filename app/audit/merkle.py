"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proofs, without storage.

A proof is a list of subtree hashes. Which subtrees a proof needs depends only on the leaf index
and the tree sizes, so the shapes are computed here as half-open leaf ranges, and the caller
fetches the hashes of those ranges from wherever it keeps them (app/audit/tree.py: stored
perfect subtrees). Every range of a proof splits into at most log2(n) perfect, aligned
subtrees (:func:`perfect_subtrees`), which is what makes a proof O(log n) stored hashes.

The verification functions are RFC 9162 §2.1.3.2 and §2.1.4.2 step by step; the offline
verifier (app/audit/remote.py) uses them, and a country may as well write its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

Range = tuple[int, int]
"""Leaves ``[start, end)`` of a subtree."""

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(size: int) -> int:
    """The largest power of two smaller than ``size`` (size > 1): where RFC 9162 splits a tree."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """``[start, end)`` as (level, index) of perfect subtrees, left to right, largest first: the
    subtree at (level, index) holds leaves ``[index << level, (index + 1) << level)``. The ranges
    of RFC 9162 proofs always split this way; folding the hashes from the right
    (:func:`fold`) gives the range's Merkle tree hash."""
    subtrees = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start % (1 << level):
            raise ValueError(f"[{start}, {end}) is not a subtree of an RFC 9162 tree")
        subtrees.append((level, start >> level))
        start += 1 << level
    return subtrees


def fold(hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of consecutive perfect subtrees given left to right, largest first."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees whose hashes prove leaf ``index`` in a tree of ``size`` leaves, in proof
    order (RFC 9162 §2.1.3.1, PATH)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
    return list(reversed(path))


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The subtrees whose hashes prove that the tree of ``old_size`` leaves is a prefix of the
    tree of ``new_size`` (RFC 9162 §2.1.4.1, PROOF); empty when either tree is empty or they are
    the same."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency from {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[Range] = []
    start, end, m, whole = 0, new_size, old_size, True
    while m != end - start:
        k = split(end - start)
        if m <= k:
            proof.append((start + k, end))
            end = start + k
        else:
            proof.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append((start, end))
    return list(reversed(proof))


class CompactRange:
    """A tree being grown leaf by leaf, kept as the hashes of its perfect subtrees, largest first
    (its right edge, at most log2(n) hashes): enough to append leaves and to know the root at
    every size, without holding the leaves (Trillian's compact ranges). A verifier that sees every
    leaf rebuilds the tree with one, in constant memory, and needs no inclusion proof."""

    def __init__(self) -> None:
        self.size, self.hashes = 0, list[bytes]()

    def append(self, leaf: bytes) -> None:
        """Add the next leaf's hash: it merges with the subtrees it completes."""
        self.hashes.append(leaf)
        completed = self.size
        while completed & 1:
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)
            completed >>= 1
        self.size += 1

    def root(self) -> bytes:
        return fold(self.hashes)


class ProofError(ValueError):
    """A proof that does not lead to the hash it should."""


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2; raises :class:`ProofError` unless ``leaf`` is leaf ``index`` of the
    tree of ``size`` leaves whose root is ``root``."""
    if index >= size:
        raise ProofError(f"leaf {index} is beyond a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r != root:
        raise ProofError(f"leaf {index} is not in the tree of {size} with this root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2; raises :class:`ProofError` unless the tree of ``old_size`` with
    ``old_root`` is a prefix of the tree of ``new_size`` with ``new_root``."""
    if old_size > new_size:
        raise ProofError(f"a tree of {new_size} cannot extend one of {old_size}")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree is empty")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise ProofError(f"the tree of {new_size} does not extend the tree of {old_size}")
