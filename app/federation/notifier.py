"""The two background duties of a node in a federation, each a pass a runtime loop repeats:

- as an origin node, notify each peer of a change to a search it asked for (status, candidates,
  review states) with a signed message, until the search is settled; a peer that does not answer
  is told at a later pass;
- as a requesting node, follow its searches at peers: resend those never accepted when asked to
  retry, poll the state of accepted ones (the fallback when a notification was lost)."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.db.session import Sessions, transaction
from app.federation import outbound
from app.federation.channel import PeerChannel, PeerUnavailable
from app.federation.inbound import digest, record_delivery, states_of
from app.federation.models import InboundSearch, Peer
from app.federation.wire import NOTIFICATIONS_PATH

log = logging.getLogger(__name__)


def notify_changes(sessions: Sessions, readers: Sessions, channel: PeerChannel) -> int:
    """One pass over the searches peers asked for, read at once through ``readers`` (on SQLite,
    no wait for the write lock); returns how many notifications were taken. A request not yet
    linked to its search is left alone: it is being answered (its answer carries its state), or
    its process died and the peer's resend will be; the peer could not place a notification of
    it anyway (it knows a search by the reference the answer gives)."""
    unsettled = InboundSearch.settled.is_(False) & InboundSearch.search_id.is_not(None)
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
