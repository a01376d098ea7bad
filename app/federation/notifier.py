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
from app.federation.inbound import digest, record_delivery, state_of
from app.federation.models import InboundSearch, Peer
from app.federation.wire import NOTIFICATIONS_PATH

log = logging.getLogger(__name__)


def notify_changes(sessions: Sessions, channel: PeerChannel) -> int:
    """One pass over the searches peers asked for; returns how many notifications were taken."""
    with sessions() as session:
        pending = list(
            session.execute(
                select(InboundSearch.id, Peer)
                .join(Peer, Peer.id == InboundSearch.peer_id)
                .where(InboundSearch.settled.is_(False), Peer.removed_at.is_(None))
            ).tuples()
        )
    delivered = 0
    for inbound_id, peer in pending:
        with sessions() as session:
            inbound = session.get(InboundSearch, inbound_id)
            assert inbound is not None
            state = state_of(session, inbound)
            if digest(state) == inbound.notified_digest:
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
