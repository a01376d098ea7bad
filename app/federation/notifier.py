"""The two background duties of a node in a federation, each a pass a runtime loop repeats:

- as an origin node, notify each peer of a change to a search it asked for (status, candidates,
  review states) with a signed message, until the search is settled; a peer that does not answer
  is told at a later pass (at the latest the next sweep over every search);
- as a requesting node, follow its searches at peers: resend those never accepted when asked to
  retry, poll the state of accepted ones (the fallback when a notification was lost)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select

from app.cases.models import Case
from app.db.base import utcnow
from app.db.session import Sessions, transaction
from app.federation import outbound
from app.federation.channel import PeerChannel, PeerUnavailable
from app.federation.inbound import digest, record_delivery, states_of
from app.federation.models import InboundSearch, Peer
from app.federation.wire import NOTIFICATIONS_PATH
from app.matching.models import Candidate, Search

log = logging.getLogger(__name__)


CHANGE_MARGIN_S = 2.0
"""How far before the last pass a change's time may lie and still be looked at: a change is
stamped inside its transaction and committed after; one committed later than that is seen at the
next sweep."""


class ChangeNotifier:
    """The origin node's notifier: each pass looks only at the searches peers asked for that
    changed since the last pass (a search started or ended, a candidate reviewed, a case moved),
    and once every ``sweep_s`` at all of them, so that a pass costs what changed, not every
    search still awaiting review."""

    def __init__(self, sessions: Sessions, readers: Sessions, channel: PeerChannel, sweep_s: float) -> None:
        self.sessions, self.readers, self.channel = sessions, readers, channel
        self.sweep = timedelta(seconds=sweep_s)
        self.swept_at: datetime | None = None
        self.since: datetime | None = None

    def run_once(self) -> int:
        """One pass; returns how many notifications were taken."""
        started = utcnow()
        sweeping = self.swept_at is None or started - self.swept_at >= self.sweep
        delivered = notify_changes(self.sessions, self.readers, self.channel, None if sweeping else self.since)
        self.since = started - timedelta(seconds=CHANGE_MARGIN_S)
        if sweeping:
            self.swept_at = started
        return delivered


def changed_since(since: datetime) -> ColumnElement[bool]:
    """Inbound searches whose state may have changed since ``since``."""
    return or_(
        InboundSearch.search_id.in_(
            select(Search.id).where(or_(Search.started_at >= since, Search.finished_at >= since))
        ),
        InboundSearch.search_id.in_(
            select(Candidate.search_id).where(or_(Candidate.reviewed_at >= since, Candidate.first_reviewed_at >= since))
        ),
        InboundSearch.case_id.in_(select(Case.id).where(Case.status_changed_at >= since)),
    )


def notify_changes(sessions: Sessions, readers: Sessions, channel: PeerChannel, since: datetime | None = None) -> int:
    """One pass over the searches peers asked for (those changed since ``since``, if given), read
    at once through ``readers`` (on SQLite, no wait for the write lock); returns how many
    notifications were taken. A request not yet linked to its search is left alone: it is being
    answered (its answer carries its state), or its process died and the peer's resend will be;
    the peer could not place a notification of it anyway (it knows a search by the reference the
    answer gives)."""
    unsettled = InboundSearch.settled.is_(False) & InboundSearch.search_id.is_not(None)
    if since is not None:
        unsettled = unsettled & changed_since(since)
    with readers() as session:
        peers = dict(
            session.execute(
                select(InboundSearch.id, Peer)
                .join(Peer, Peer.id == InboundSearch.peer_id)
                .where(unsettled, Peer.removed_at.is_(None))
            ).all()
        )
        states = states_of(session, unsettled)
    delivered = 0
    for inbound_id, (state, notified) in states.items():
        peer = peers.get(inbound_id)
        if peer is None or digest(state) == notified:
            continue
        try:
            exchange = channel.send(peer, "notification", "POST", NOTIFICATIONS_PATH, state.model_dump(mode="json"))
        except PeerUnavailable:
            continue
        if exchange.status != 200:
            log.warning("notification refused", extra={"event": {"peer": peer.country, "status": exchange.status}})
            continue
        with transaction(sessions) as session:
            inbound = session.get(InboundSearch, inbound_id)
            assert inbound is not None
            signatures = {"own_signature": exchange.sent, "peer_signature": exchange.answer}
            record_delivery(session, inbound, state, "notification", signatures)
        delivered += 1
    return delivered


def follow_outbound(sessions: Sessions, channel: PeerChannel) -> None:
    """One pass over this node's searches at peers that are not settled."""
    for outbound_id in outbound.to_follow(sessions):
        outbound.poll(sessions, channel, outbound_id)
