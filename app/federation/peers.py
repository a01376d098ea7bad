"""Peers: the other nodes this node trusts, each for one country and by one Ed25519 key.

A peer acts on this node as a principal of its own (role border_police, agency
``node:<country>``), created and revoked with it, so that its searches are scoped to its own
remote cases and audited under its name like any agency's. One live peer per country: a
country's searches go to exactly one node."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.core.countries import check_country
from app.db.base import utcnow
from app.db.session import Sessions, insert, transaction
from app.federation.exceptions import DuplicatePeer, InvalidPeer, NodeNotInitialised, UnknownPeer
from app.federation.models import Peer
from app.federation.node import NodeIdentity, key_id, parse_public_key
from app.principals.models import Principal, Role
from app.principals.service import add_principal, revoke


def peer_agency(country: str) -> str:
    """The agency a peer's principal belongs to, and that its remote cases carry."""
    return f"node:{country}"


def add_peer(
    sessions: Sessions, actor: Principal | None, node: NodeIdentity | None, country: str, url: str, public_key: str
) -> Peer:
    """Register a peer node for ``country``; ``actor`` None is the operator on the command line."""
    if node is None:
        raise NodeNotInitialised("this node has no identity yet: run `readmit node init` first")
    check_country(country)
    if country == node.country:
        raise InvalidPeer(f"{country} is this node's own country")
    raw_key = parse_public_key(public_key)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidPeer("url is the peer's base URL, e.g. https://readmit.example.sn")
    with transaction(sessions) as session:
        if live_peer_of(session, country) is not None:
            raise DuplicatePeer(f"a peer for {country} is already registered: remove it first")
        principal, _ = add_principal(
            session, actor, f"peer node {country}", Role.BORDER_POLICE, country, peer_agency(country)
        )
        peer = insert(
            session,
            Peer(
                country=country,
                url=url.rstrip("/"),
                public_key=public_key,
                key_id=key_id(raw_key),
                principal_id=principal.id,
                created_by=actor.id if actor else None,
            ),
        )
        audit.append(
            session,
            actor,
            Action.PEER_ADD,
            f"peer/{peer.id}",
            [country],
            details={"country": country, "url": peer.url, "keyid": peer.key_id},
        )
    return peer


def list_peers(sessions: Sessions) -> list[Peer]:
    with sessions() as session:
        return list(session.scalars(select(Peer).where(Peer.removed_at.is_(None)).order_by(Peer.id)))


def remove_peer(sessions: Sessions, actor: Principal | None, peer_id: int) -> None:
    """The peer is trusted no more, at once: its messages are refused and its principal revoked.
    Its row stays for the searches and events that name it."""
    with transaction(sessions) as session:
        peer = session.get(Peer, peer_id)
        if peer is None or peer.removed_at is not None:
            raise UnknownPeer(f"peer {peer_id} not found")
        peer.removed_at = utcnow()
        principal = session.get(Principal, peer.principal_id)
        if principal is not None and principal.revoked_at is None:
            revoke(session, actor, principal)
        audit.append(session, actor, Action.PEER_REMOVE, f"peer/{peer.id}", [peer.country])


def live_peer_of(session: Session, country: str) -> Peer | None:
    return session.scalar(select(Peer).where(Peer.country == country, Peer.removed_at.is_(None)))


def peer_with_key(session: Session, signer_key_id: str) -> Peer | None:
    return session.scalar(select(Peer).where(Peer.key_id == signer_key_id, Peer.removed_at.is_(None)))
