"""The verifiable log's use cases: sequence committed events into the chain and the Merkle
tree, sign checkpoints when due or on demand, and answer for the latest checkpoint and RFC 9162
proofs.

Appending stays in app/audit/service.py, in the caller's transaction and cheap: an event is
durable (committed, pending) before it has a ``seq``, and the sequencer chains every committed
event and puts it in the tree shortly after (``audit_sequence_interval_s``), also after a
restart; every answer below sequences first. A checkpoint commits the log to a tree size and
root: once a party holds one, the operator cannot change or remove any event under it without
that party seeing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.audit import sequencing, tree
from app.audit.exceptions import InvalidProofRange, NoCheckpoint, SigningKeyMismatch, TreeTooSmall
from app.audit.models import AuditCheckpoint
from app.audit.notes import Checkpoint, NoteError, Signer
from app.audit.service import Actor, visible_event
from app.db.base import utcnow
from app.db.session import Sessions


@dataclass(frozen=True)
class CheckpointPolicy:
    """Sign when the tree has grown and ``interval_s`` have passed since the last checkpoint, or
    as soon as it has grown by ``events``."""

    interval_s: float
    events: int

    def due(self, last: SignedCheckpoint | None, size: int, now: datetime) -> bool:
        if last is None:
            return True
        grown = size - last.size
        return grown >= self.events or (grown > 0 and (now - last.signed_at).total_seconds() >= self.interval_s)


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    root: str
    signed_at: datetime
    note: str


@dataclass(frozen=True)
class Sequenced:
    size: int
    delays_s: list[float]
    """From append to being chained and in the tree, one per event sequenced."""
    signed: SignedCheckpoint | None


@dataclass(frozen=True)
class Look:
    """What the sequencer found without writing: ``size`` is the tree's."""

    size: int
    pending: int
    idle: bool
    """Nothing to sequence and no checkpoint due."""


def look(read_sessions: Sessions, policy: CheckpointPolicy) -> Look:
    """Read without a write transaction, so that an idle sequencer never takes SQLite's write
    lock from the appends."""
    with read_sessions() as session:
        backlog = sequencing.backlog(session)
        due = policy.due(_latest(session), backlog.in_tree, utcnow())
    return Look(backlog.in_tree, backlog.pending, backlog.empty and not due)


def sequence(sessions: Sessions, signer: Signer, policy: CheckpointPolicy, force: bool = False) -> Sequenced:
    """Chain every committed event and put it in the tree, one transaction per batch, and sign a
    checkpoint in that transaction when the policy says so (``force``: whenever the tree has
    grown since the last one, as an auditor's request asks)."""
    signed: list[SignedCheckpoint] = []

    def sign_if_due(session: Session, step: sequencing.Step) -> None:
        head = tree.head(session, lock=True)  # one signer at a time, of the tree as it is now
        now, last = utcnow(), _latest(session)
        if policy.due(last, head.size, now) or (force and (last is None or head.size > last.size)):
            signed.append(_sign(session, signer, head, now))

    steps = sequencing.catch_up(sessions, sign_if_due)
    delays = [delay for step in steps for delay in step.delays_s]
    return Sequenced(steps[-1].head.size, delays, signed[-1] if signed else None)


def _sign(session: Session, signer: Signer, head: tree.TreeHead, now: datetime) -> SignedCheckpoint:
    checkpoint = SignedCheckpoint(
        head.size, head.root.hex(), now, signer.sign(Checkpoint(signer.name, head.size, head.root, now).text())
    )
    session.connection().execute(insert(AuditCheckpoint).values(**asdict(checkpoint)))
    return checkpoint


def _latest(session: Session) -> SignedCheckpoint | None:
    row = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)).first()
    return SignedCheckpoint(row.size, row.root, row.signed_at, row.note) if row else None


def check_signer(sessions: Sessions, signer: Signer) -> None:
    """Refuse to start with a key that did not sign the log's latest checkpoint: every process
    and node of one database signs the same log, with the same key."""
    with sessions() as session:
        latest = _latest(session)
    if latest is None:
        return
    try:
        signer.verifier.open(latest.note)
    except NoteError:
        raise SigningKeyMismatch(
            f"the audit log's checkpoints are signed by another key than {signer.verifier}: give every "
            "node of this database the same key file (READMIT_AUDIT_KEY_FILE), the one the parties verify"
        ) from None


def latest_checkpoint(sessions: Sessions) -> SignedCheckpoint:
    """The latest checkpoint signed, after sequencing what was committed before the call (which
    the next checkpoint due, or one asked for, then covers)."""
    sequencing.catch_up(sessions)
    with sessions() as session:
        latest = _latest(session)
    if latest is None:
        raise NoCheckpoint("the log has not signed its first checkpoint yet; retry in a moment")
    return latest


@dataclass(frozen=True)
class InclusionProof:
    seq: int
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    hashes: list[bytes]


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    hashes: list[bytes]


def _check_size(session: Session, size: int) -> None:
    current = tree.head(session).size
    if size > current:
        raise TreeTooSmall(f"the tree has {current} events, not {size}", details={"tree_size": current})


def inclusion(sessions: Sessions, actor: Actor, seq: int, tree_size: int) -> InclusionProof:
    """The proof that event ``seq`` is leaf ``seq - 1`` of the tree of ``tree_size`` events; an
    event outside the actor's country is not found. Sequences first, so that an event
    acknowledged before the call is found."""
    sequencing.catch_up(sessions)
    with sessions() as session:
        _check_size(session, tree_size)  # a tree the log has not reached: 409, whatever the event
        visible_event(session, actor, seq)
        if seq > tree_size:
            raise InvalidProofRange(f"event {seq} is not in a tree of {tree_size} events")
        [leaf] = tree.range_hashes(session, [(seq - 1, seq)])
        return InclusionProof(seq, seq - 1, tree_size, leaf, tree.inclusion_proof(session, seq - 1, tree_size))


def consistency(sessions: Sessions, old_size: int, new_size: int) -> ConsistencyProof:
    """The proof that the tree of ``old_size`` events is a prefix of the tree of ``new_size``."""
    if old_size > new_size:
        raise InvalidProofRange(f"no consistency proof from {old_size} back to {new_size}")
    sequencing.catch_up(sessions)
    with sessions() as session:
        _check_size(session, new_size)
        return ConsistencyProof(old_size, new_size, tree.consistency_proof(session, old_size, new_size))
