"""The tamper-evident audit trail: append in the caller's transaction, read, verify.

Each event's hash is SHA-256 over a canonical serialisation of its fields and the previous
event's hash (app/audit/canonical.py), so changing, removing or reordering any event breaks
every hash after it. An append only queues the event in the caller's transaction; the
sequencer (app/audit/sequencing.py) chains it after commit, and every read of the trail below
sequences first. Events hold who did what to which resource and how it ended, never templates,
probes or identity attributes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.audit import sequencing
from app.audit.actions import Action
from app.audit.canonical import GENESIS_HASH, canonical_bytes
from app.audit.exceptions import UnknownEvent
from app.audit.models import AuditEvent, AuditEventCountry, AuditHead, AuditPending
from app.db.base import utcnow
from app.db.session import Sessions, transaction


class Actor(Protocol):
    """Who acted, as the trail records it (a principal; None for the service itself)."""

    @property
    def id(self) -> int: ...

    @property
    def role(self) -> str: ...

    @property
    def country(self) -> str | None: ...


@dataclass(frozen=True)
class Event:
    """One event to append: who did what to which resource, touching which countries, and how it
    ended. ``countries``: those whose data or principals the event touches besides the actor's
    own (a gallery's, a case's presumed and receiving countries, ...); each one's auditor sees the
    event."""

    principal: Actor | None
    action: Action
    resource: str
    countries: Iterable[str | None]
    outcome: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)


def append(
    session: Session,
    principal: Actor | None,
    action: Action,
    resource: str,
    countries: Iterable[str | None],
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> None:
    """Append one event in ``session``'s transaction; it commits or rolls back with the change
    it records."""
    append_many(session, [Event(principal, action, resource, countries, outcome, details or {})])


def append_many(session: Session, events: Sequence[Event]) -> None:
    """Append ``events`` in order, in ``session``'s transaction: one insert into audit_pending,
    reading and locking nothing shared, so that the writers of every process and node never
    wait on one another's transactions. The sequencer gives them their ``seq`` and chain hash
    once committed (within ``audit_sequence_interval_s``, or at the next read of the trail); an
    event rolled back with its change is never chained.

    The countries each event touches are written into its ``details["countries"]``, under the
    hash, so that moving an event out of a country's sight later breaks the chain and the Merkle
    tree like any edit; the sequencer copies them into audit_event_countries, which a country's
    auditor reads by. A Core statement whatever the number of events, no ORM unit of work: every
    write of the service ends here, and a batch of searches ends in one append."""
    if not events:
        return
    at = utcnow()
    rows = []
    for event in events:
        actor_country = event.principal.country if event.principal else None
        touched = sorted({c for c in (*event.countries, actor_country) if c})
        rows.append(
            {
                "at": at,
                "principal_id": event.principal.id if event.principal else None,
                "role": event.principal.role if event.principal else None,
                "action": event.action.value,
                "resource": event.resource,
                "outcome": event.outcome,
                "details": {**event.details, "countries": touched} if touched else event.details,
            }
        )
    session.connection().execute(_INSERT_PENDING, rows)


_INSERT_PENDING = insert(AuditPending)
"""Built once: building a statement costs more than running it on the write path."""


def list_events(session: Session, after: int, limit: int, country: str | None = None) -> list[AuditEvent]:
    """Events after ``after`` in order; with ``country``, only those touching it."""
    query = select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq).limit(limit)
    if country is not None:
        query = query.join(AuditEventCountry, AuditEventCountry.seq == AuditEvent.seq).where(
            AuditEventCountry.country == country
        )
    return list(session.scalars(query))


def visible_event(session: Session, actor: Actor, seq: int) -> AuditEvent:
    """The event ``seq`` if the actor's scope holds it (404 otherwise, as if it did not exist)."""
    query = select(AuditEvent).where(AuditEvent.seq == seq)
    if actor.country is not None:
        query = query.join(AuditEventCountry, AuditEventCountry.seq == AuditEvent.seq).where(
            AuditEventCountry.country == actor.country
        )
    event = session.scalar(query)
    if event is None:
        raise UnknownEvent(f"audit event {seq} not found")
    return event


@dataclass(frozen=True)
class Verification:
    ok: bool
    events_checked: int
    first_bad_seq: int | None = None


def verify_chain(session: Session, batch: int = 5000) -> Verification:
    """Recompute every hash in order up to the chain's head, read first (the sequencer may chain
    more meanwhile); the first event whose stored hash, link or sequence number does not match
    is named, and the head must agree with the last event."""
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one_or_none()
    if head is None:
        return Verification(False, 0, 1)
    expected_prev, expected_seq, checked, after = GENESIS_HASH, 1, 0, 0
    while checked < head.seq:
        events = list_events(session, after, min(batch, head.seq - checked))
        for event in events:
            recomputed = hashlib.sha256(canonical_bytes(event)).hexdigest()
            if event.seq != expected_seq or event.prev_hash != expected_prev or event.hash != recomputed:
                return Verification(False, checked, event.seq)
            expected_prev, expected_seq, checked = event.hash, event.seq + 1, checked + 1
        if not events:
            break
        after = events[-1].seq
    if checked != head.seq or expected_prev != head.hash:
        return Verification(False, checked, checked + 1 if head.seq > checked else checked)
    return Verification(True, checked)


def read_events(sessions: Sessions, actor: Actor, after: int, limit: int) -> list[AuditEvent]:
    """A page of the trail in order, within the actor's country if it has one, every event
    acknowledged before the call included; the read itself is audited."""
    sequencing.catch_up(sessions)
    with transaction(sessions) as session:
        page = list_events(session, after, limit, actor.country)
        append(session, actor, Action.AUDIT_READ, "audit/events", (), details={"after": after, "limit": limit})
    return page


def verify(sessions: Sessions, read_sessions: Sessions, actor: Actor) -> Verification:
    """Recompute the chain, every event acknowledged before the call included, for an auditor;
    the check and its outcome are audited. The chain is read through ``read_sessions``: its
    length grows without end, and SQLite's writers' turn is not held meanwhile."""
    sequencing.catch_up(sessions)
    with read_sessions() as session:
        result = verify_chain(session)
    with transaction(sessions) as session:
        append(
            session,
            actor,
            Action.AUDIT_VERIFY,
            "audit/verify",
            (),
            outcome="ok" if result.ok else "chain_broken",
            details={"events_checked": result.events_checked, "first_bad_seq": result.first_bad_seq},
        )
    return result


def check_chain(sessions: Sessions, read_sessions: Sessions) -> Verification:
    """Recompute the chain for the operator on the host (``readmit audit verify``), who acts
    as no principal: nothing is appended. Read apart from the writers, as the service may run."""
    sequencing.catch_up(sessions)
    with read_sessions() as session:
        return verify_chain(session)


def export_events(sessions: Sessions, read_sessions: Sessions, after: int, batch: int = 5000) -> Iterator[AuditEvent]:
    """Every event after ``after`` in order, read in batches, for the operator's export. Read
    apart from the writers: the export goes at its reader's pace (``| less``), and a writing
    session held that long stopped the running service's writes."""
    sequencing.catch_up(sessions)
    with read_sessions() as session:
        while events := list_events(session, after, batch):
            yield from events
            after = events[-1].seq
