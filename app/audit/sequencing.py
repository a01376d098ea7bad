"""Sequencing: committed audit events into the hash chain and the Merkle tree, after their
writers' transactions, one sequencer at a time, as transparency logs do (Trillian's queue and
sequencer).

Writers insert their events into audit_pending and nothing else (app/audit/service.py). One
sequencing step, in one transaction, locks the chain's head (only sequencers take it: on
PostgreSQL the sequencers of every process and node queue on that row; SQLite has one writer
anyway), reads the pending events committed so far in ``id`` order, gives each the next ``seq``
and its chain hash exactly as appends did before (canonical bytes unchanged), inserts them and
the countries they touch, deletes them from audit_pending, moves the head and extends the tree.
An event whose writer commits after the step has read the pending table waits for the next
step and gets a later ``seq``: on PostgreSQL ids from the sequence may commit out of order, and
none is skipped, since a step deletes exactly the rows it chained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from app.audit import tree
from app.audit.canonical import canonical_event
from app.audit.models import AuditEvent, AuditEventCountry, AuditHead, AuditPending, AuditTreeHead
from app.db.base import utcnow
from app.db.session import Sessions, transaction

SEQUENCE_BATCH = 5000
"""Events chained per transaction: a backlog (after an outage of the sequencer, an upgrade) is
caught up in steps that each hold the head briefly."""


@dataclass(frozen=True)
class Backlog:
    pending: int
    """Events committed by their writers and not chained yet."""
    chained: int
    in_tree: int

    @property
    def empty(self) -> bool:
        return self.pending == 0 and self.chained == self.in_tree


@dataclass(frozen=True)
class Step:
    """What one sequencing transaction did."""

    head: tree.TreeHead
    delays_s: list[float]
    """From each event's append to its sequencing, one per event chained."""
    more: bool
    """A full batch: more events may be waiting."""


def backlog(session: Session) -> Backlog:
    """Read without locking anything: cheap enough for every read of the trail to ask first."""
    row = session.execute(_BACKLOG).one()
    return Backlog(row.pending, row.chained, row.in_tree)


def step(session: Session, limit: int = SEQUENCE_BATCH) -> Step:
    """Chain up to ``limit`` pending events and put up to ``limit`` chained events in the tree,
    in ``session``'s transaction; takes no lock when there is nothing to do."""
    if backlog(session).empty:
        return Step(tree.head(session), [], False)
    appended_at, leaves = _chain_pending(session, limit)
    extension = tree.extend(session, limit, leaves)
    now = utcnow()
    delays = [(now - at).total_seconds() for at in appended_at]
    return Step(extension.head, delays, len(appended_at) == limit or extension.added == limit)


def catch_up(sessions: Sessions, within: Callable[[Session, Step], None] | None = None) -> list[Step]:
    """Sequence every event committed before the call, one transaction per batch. Every read of
    the trail calls this first, so that an auditor sees an event as soon as the change it records
    was acknowledged. ``within`` runs in each step's transaction after it (the background
    sequencer signs checkpoints there)."""
    steps = []
    while True:
        with transaction(sessions) as session:
            done = step(session)
            if within is not None:
                within(session, done)
        steps.append(done)
        if not done.more:
            return steps


def _chain_pending(session: Session, limit: int) -> tuple[list[datetime], list[tree.Leaf]]:
    """Chain the pending events: when each was appended, and each one's seq and canonical
    bytes, which the tree takes as its next leaves rather than reading back what was just
    written."""
    connection = session.connection()
    head = connection.execute(_LOCK_HEAD).one()
    pending = connection.execute(_PENDING, {"limit": limit}).all()
    if not pending:
        return [], []
    seq, previous = head.seq, head.hash
    events, countries, leaves = [], [], []
    for row in pending:
        seq += 1
        canonical = canonical_event(
            seq, row.at, row.principal_id, row.role, row.action, row.resource, row.outcome, row.details, previous
        )
        digest = hashlib.sha256(canonical).hexdigest()
        leaves.append(tree.Leaf(seq, canonical))
        events.append(
            {
                "seq": seq,
                "at": row.at,
                "principal_id": row.principal_id,
                "role": row.role,
                "action": row.action,
                "resource": row.resource,
                "outcome": row.outcome,
                "details": row.details,
                "prev_hash": previous,
                "hash": digest,
            }
        )
        countries += [{"seq": seq, "country": country} for country in row.details.get("countries", ())]
        previous = digest
    connection.execute(_INSERT_EVENT, events)
    if countries:
        connection.execute(_INSERT_COUNTRIES, countries)
    connection.execute(_DELETE_PENDING, {"ids": [row.id for row in pending]})
    connection.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": previous})
    return [row.at for row in pending], leaves


_BACKLOG = select(
    select(func.count()).select_from(AuditPending).scalar_subquery().label("pending"),
    select(AuditHead.seq).where(AuditHead.id == 1).scalar_subquery().label("chained"),
    select(AuditTreeHead.size).where(AuditTreeHead.id == 1).scalar_subquery().label("in_tree"),
)
_LOCK_HEAD = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1).with_for_update()
_PENDING = select(AuditPending.__table__).order_by(AuditPending.id).limit(bindparam("limit"))
_INSERT_EVENT = insert(AuditEvent)
_INSERT_COUNTRIES = insert(AuditEventCountry)
_DELETE_PENDING = delete(AuditPending).where(AuditPending.id.in_(bindparam("ids", expanding=True)))
_MOVE_HEAD = update(AuditHead).where(AuditHead.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
"""Built once: building a statement costs more than running it."""
