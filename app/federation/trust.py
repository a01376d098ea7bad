"""Whether a message that claims to come from a peer node does: signed by the key of a live peer
over the required components and its body, within the signature window, never seen before
(its nonce), the peer within its rate limit. Checked before its body is parsed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from app.core.errors import RateLimited
from app.core.throttle import Throttle
from app.db.base import utcnow
from app.db.session import Sessions, transaction
from app.federation.exceptions import InvalidSignature, ReplayedMessage
from app.federation.models import Peer, SeenNonce
from app.federation.node import public_key_of
from app.federation.peers import peer_with_key
from app.federation.signatures import REQUEST_COMPONENTS, Proof, RequestMessage, signer_key_id, verify
from app.observability.metrics import Metrics


@dataclass(frozen=True)
class Verified:
    peer: Peer
    proof: Proof


def authenticate_peer(
    sessions: Sessions,
    readers: Sessions,
    throttle: Throttle,
    metrics: Metrics,
    window_s: int,
    message: RequestMessage,
    body: bytes,
) -> Verified:
    """The live peer that signed ``message``, and the proof of its signature; InvalidSignature,
    ReplayedMessage or rate_limited otherwise. The peer is looked up through ``readers`` (on
    SQLite, no wait for the write lock); only its nonce is written."""
    key_id = signer_key_id(message.headers)
    with readers() as session:
        peer = peer_with_key(session, key_id)
    if peer is None:
        metrics.peer_messages.labels("unknown", "any", "received", InvalidSignature.code).inc()
        raise InvalidSignature("the message is signed by a key no peer of this node holds")
    try:
        proof = verify(message, body, key_id, public_key_of(peer), window_s, REQUEST_COMPONENTS)
        remember_nonce(sessions, peer.id, proof.nonce, window_s)
    except (InvalidSignature, ReplayedMessage) as refusal:
        metrics.peer_messages.labels(peer.country, "any", "received", refusal.code).inc()
        raise
    try:
        throttle.hit_peer(peer.id)
    except RateLimited as refusal:
        metrics.peer_messages.labels(peer.country, "any", "received", refusal.code).inc()
        raise
    return Verified(peer, proof)


def remember_nonce(sessions: Sessions, peer_id: int, nonce: str, window_s: int) -> None:
    """Keep the nonce for the signature window (a message older than that is refused anyway);
    one seen before is a replay. Nonces past the window are dropped as new ones come."""
    now = utcnow()
    try:
        with transaction(sessions) as session:
            session.execute(delete(SeenNonce).where(SeenNonce.seen_at < now - timedelta(seconds=2 * window_s)))
            session.add(SeenNonce(peer_id=peer_id, nonce=nonce, seen_at=now))
    except IntegrityError:
        raise ReplayedMessage("this signed message was received before: replays are refused") from None
