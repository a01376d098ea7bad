"""The tamper-evident audit trail: append in the caller's transaction, read, verify.

Each event's hash is SHA-256 over a canonical JSON serialisation of its fields and the previous
event's hash, so changing, removing or reordering any event breaks every hash after it. Events
hold who did what to which resource and how it ended, never templates, probes or identity
attributes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from app.audit.actions import Action
from app.audit.exceptions import UnknownEvent
from app.audit.models import AuditEvent, AuditEventCountry, AuditHead
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


GENESIS_HASH = "0" * 64


CANONICAL_FIELDS = ("seq", "at", "principal_id", "role", "action", "resource", "outcome", "details", "prev_hash")


def canonical_json(event: dict[str, Any]) -> bytes:
    """The bytes an event's chain hash is over, and its Merkle leaf (README, "Audit trail"):
    the JSON object of :data:`CANONICAL_FIELDS` (``at`` already a string), keys sorted, no
    spaces, ASCII escapes. An event as the API or the export gives it goes in as it is."""
    return json.dumps(
        {name: event[name] for name in CANONICAL_FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode()


def canonical_event(
    seq: int,
    at: datetime,
    principal_id: int | None,
    role: str | None,
    action: str,
    resource: str,
    outcome: str,
    details: dict[str, Any],
    prev_hash: str,
) -> bytes:
    return canonical_json(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "principal_id": principal_id,
            "role": role,
            "action": action,
            "resource": resource,
            "outcome": outcome,
            "details": details,
            "prev_hash": prev_hash,
        }
    )


def canonical_bytes(event: AuditEvent) -> bytes:
    return canonical_event(
        event.seq,
        event.at,
        event.principal_id,
        event.role,
        event.action,
        event.resource,
        event.outcome,
        event.details,
        event.prev_hash,
    )


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
    """Append ``events`` in order, in ``session``'s transaction. The head row is locked so that
    concurrent appends queue rather than fork.

    The countries each event touches are written into its ``details["countries"]``, under the
    hash, so that moving an event out of a country's sight later breaks the chain and the Merkle
    tree like any edit, and into audit_event_countries, which a country's auditor reads by.

    Core statements on the transaction's connection whatever the number of events (read and lock
    the head, insert the events and their countries, move the head): no ORM unit of work, as
    every write of the service ends here, and a batch of searches ends in one append. Putting
    the events in the Merkle tree is the sequencer's job, after commit."""
    if not events:
        return
    session.flush()  # the change recorded goes first, whatever the caller left pending
    connection = session.connection()
    head = connection.execute(_LOCK_HEAD).one()
    at = utcnow()
    seq, previous = head.seq, head.hash
    rows, countries = [], []
    for event in events:
        seq += 1
        principal_id = event.principal.id if event.principal else None
        role = event.principal.role if event.principal else None
        actor_country = event.principal.country if event.principal else None
        touched = sorted({c for c in (*event.countries, actor_country) if c})
        details = {**event.details, "countries": touched} if touched else event.details
        action = event.action.value
        canonical = canonical_event(
            seq, at, principal_id, role, action, event.resource, event.outcome, details, previous
        )
        digest = hashlib.sha256(canonical).hexdigest()
        rows.append(
            {
                "seq": seq,
                "at": at,
                "principal_id": principal_id,
                "role": role,
                "action": action,
                "resource": event.resource,
                "outcome": event.outcome,
                "details": details,
                "prev_hash": previous,
                "hash": digest,
            }
        )
        countries += [{"seq": seq, "country": country} for country in touched]
        previous = digest
    connection.execute(_INSERT_EVENT, rows)
    if countries:
        connection.execute(_INSERT_COUNTRIES, countries)
    connection.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": previous})


_LOCK_HEAD = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1).with_for_update()
_INSERT_EVENT = insert(AuditEvent)
_INSERT_COUNTRIES = insert(AuditEventCountry)
_MOVE_HEAD = update(AuditHead).where(AuditHead.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
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
    """Recompute every hash in order; the first event whose stored hash, link or sequence number
    does not match is named. The head row must agree with the last event too."""
    expected_prev, expected_seq, checked, after = GENESIS_HASH, 1, 0, 0
    while True:
        events = list_events(session, after, batch)
        for event in events:
            recomputed = hashlib.sha256(canonical_bytes(event)).hexdigest()
            if event.seq != expected_seq or event.prev_hash != expected_prev or event.hash != recomputed:
                return Verification(False, checked, event.seq)
            expected_prev, expected_seq, checked = event.hash, event.seq + 1, checked + 1
        if len(events) < batch:
            break
        after = events[-1].seq
    head = session.get(AuditHead, 1)
    if head is None or head.seq != checked or head.hash != expected_prev:
        return Verification(False, checked, checked + 1 if head and head.seq > checked else checked)
    return Verification(True, checked)


def read_events(sessions: Sessions, actor: Actor, after: int, limit: int) -> list[AuditEvent]:
    """A page of the trail in order, within the actor's country if it has one; the read itself
    is audited."""
    with transaction(sessions) as session:
        page = list_events(session, after, limit, actor.country)
        append(session, actor, Action.AUDIT_READ, "audit/events", (), details={"after": after, "limit": limit})
    return page


def verify(sessions: Sessions, actor: Actor) -> Verification:
    """Recompute the chain for an auditor; the check and its outcome are audited."""
    with transaction(sessions) as session:
        result = verify_chain(session)
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


def check_chain(sessions: Sessions) -> Verification:
    """Recompute the chain for the operator on the host (``readmit audit verify``), who acts
    as no principal: nothing is appended."""
    with sessions() as session:
        return verify_chain(session)


def export_events(sessions: Sessions, after: int, batch: int = 5000) -> Iterator[AuditEvent]:
    """Every event after ``after`` in order, read in batches, for the operator's export."""
    with sessions() as session:
        while events := list_events(session, after, batch):
            yield from events
            after = events[-1].seq
