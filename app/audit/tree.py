"""The Merkle tree over audit events as the database keeps it: the hash of every perfect subtree
once it is complete (leaves at level 0), and a head row with the tree's size and root.

Leaf i is event seq i + 1, its hash SHA-256(0x00 || the event's canonical bytes). Extending the
tree reads only the O(log n) subtrees on its right edge; a proof reads only the O(log n)
perfect subtrees its ranges split into, in one query. Nothing is ever rewritten: a subtree's
hash is final once its last leaf is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session

from app.audit import merkle
from app.audit.canonical import canonical_bytes
from app.audit.models import AuditEvent, AuditTreeHead, AuditTreeNode


@dataclass(frozen=True)
class TreeHead:
    size: int
    root: bytes


@dataclass(frozen=True)
class Leaf:
    """An event as the tree takes it: its seq and canonical bytes."""

    seq: int
    canonical: bytes


@dataclass(frozen=True)
class Extension:
    """What one call to :func:`extend` put in the tree."""

    head: TreeHead
    added: int


def head(session: Session, lock: bool = False) -> TreeHead:
    query = select(AuditTreeHead.size, AuditTreeHead.root).where(AuditTreeHead.id == 1)
    row = session.execute(query.with_for_update() if lock else query).one()
    return TreeHead(row.size, bytes.fromhex(row.root))


def subtree_hashes(session: Session, subtrees: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """One query, one primary-key lookup per subtree: a disjunction of ``level = ? AND idx IN
    (...)``, since SQLite scans the whole table for a row-value IN list."""
    by_level: dict[int, set[int]] = {}
    for level, idx in subtrees:
        by_level.setdefault(level, set()).add(idx)
    if not by_level:
        return {}
    rows = session.execute(
        select(AuditTreeNode.level, AuditTreeNode.idx, AuditTreeNode.hash).where(
            or_(
                *(
                    and_(AuditTreeNode.level == level, AuditTreeNode.idx.in_(sorted(idxs)))
                    for level, idxs in by_level.items()
                )
            )
        )
    )
    return {(row.level, row.idx): bytes(row.hash) for row in rows}


def range_hashes(session: Session, ranges: list[merkle.Range]) -> list[bytes]:
    """The Merkle tree hash of each range, from the stored perfect subtrees (one query)."""
    parts = [merkle.perfect_subtrees(start, end) for start, end in ranges]
    known = subtree_hashes(session, [subtree for part in parts for subtree in part])
    return [merkle.fold([known[subtree] for subtree in part]) for part in parts]


def extend(session: Session, limit: int, chained: Sequence[Leaf] = ()) -> Extension:
    """Put up to ``limit`` chained events after the tree's last leaf into the tree, in order, in
    ``session``'s transaction (the sequencer's, which holds the chain's head). The tree's head
    row is locked too, so that the tree never forks whoever else writes to it. ``chained``: the
    events this transaction has just chained, in order, which are the next leaves when the tree
    had caught up with the chain before them (otherwise they are read, with those before)."""
    current = head(session, lock=True)
    size = current.size
    known = subtree_hashes(session, merkle.perfect_subtrees(0, size))
    nodes: list[dict[str, object]] = []
    for canonical in _next_leaves(session, size, limit, chained):
        level, idx, digest = 0, size, merkle.leaf_hash(canonical)
        known[(level, idx)] = digest
        nodes.append({"level": level, "idx": idx, "hash": digest})
        while idx & 1:
            digest = merkle.node_hash(known[(level, idx - 1)], digest)
            level, idx = level + 1, idx >> 1
            known[(level, idx)] = digest
            nodes.append({"level": level, "idx": idx, "hash": digest})
        size += 1
    if size == current.size:
        return Extension(current, 0)
    root = merkle.fold([known[subtree] for subtree in merkle.perfect_subtrees(0, size)])
    connection = session.connection()
    connection.execute(insert(AuditTreeNode), nodes)
    connection.execute(update(AuditTreeHead).where(AuditTreeHead.id == 1).values(size=size, root=root.hex()))
    return Extension(TreeHead(size, root), size - current.size)


def _next_leaves(session: Session, size: int, limit: int, chained: Sequence[Leaf]) -> list[bytes]:
    """The canonical bytes of up to ``limit`` events after the tree's ``size`` leaves, never
    past a gap (the sequencer chains events in seq order under the chain's head lock)."""
    if chained and chained[0].seq == size + 1:
        return [leaf.canonical for leaf in chained[:limit]]
    query = select(AuditEvent).where(AuditEvent.seq > size).order_by(AuditEvent.seq).limit(limit)
    leaves: list[bytes] = []
    for event in session.scalars(query):
        if event.seq != size + 1 + len(leaves):
            break
        leaves.append(canonical_bytes(event))
    return leaves


def inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    return range_hashes(session, merkle.inclusion_ranges(index, size))


def consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    return range_hashes(session, merkle.consistency_ranges(old_size, new_size))
