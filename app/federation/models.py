"""What a node keeps of its federation: the peers it trusts, the nonces it has seen, the searches
it sent to peers (with what came back) and the searches peers sent to it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class Peer(Base):
    """Another node, trusted only for ``country``: its messages must verify with ``public_key``,
    and it may ask and answer only as that country. ``principal_id``: the principal it acts as
    on this node (a border_police principal of agency ``node:<country>``, whose API key nobody
    holds), so that its requests are audited and scoped like any agency's. A removed peer stays,
    with ``removed_at``, for the searches and events that name it."""

    __tablename__ = "peers"

    id: Mapped[int] = mapped_column(primary_key=True)
    country: Mapped[str] = mapped_column(String(3), index=True)
    url: Mapped[str] = mapped_column(String(500))
    public_key: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64), index=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("principals.id"))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SeenNonce(Base):
    """A signed message's nonce, kept while its ``created`` time is within the signature window:
    the same signed message twice is a replay."""

    __tablename__ = "federation_nonces"

    peer_id: Mapped[int] = mapped_column(ForeignKey("peers.id"), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class OutboundSearch(Base):
    """The part of one of this node's searches sent to a peer (the country it holds). ``status``:
    ``sending`` until the peer accepts it, then the peer's search status (queued, running, done,
    failed, expired), or ``refused`` (the peer said no: ``error`` says why) or ``unavailable``
    (never accepted, not retried). ``error`` ``peer_unavailable`` while the peer cannot be
    reached. The probes stay (sealed) on the search itself, for a retry."""

    __tablename__ = "outbound_searches"
    __table_args__ = (UniqueConstraint("request_id", name="uq_outbound_searches_request_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    peer_id: Mapped[int] = mapped_column(ForeignKey("peers.id"))
    country: Mapped[str] = mapped_column(String(3))
    request_id: Mapped[str] = mapped_column(String(64))
    origin_ref: Mapped[int | None] = mapped_column(Integer)
    """The peer's handle of the search (its inbound search id), once accepted."""
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(String(64))
    retry: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    settled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), index=True)
    """Nothing more can change: no need to poll it."""
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RemoteCandidate(Base):
    """A candidate the peer found, as it reported it: its own candidate id, the record's
    reference id, rank, score, band and review state; identity attributes only once its consuls
    confirmed it."""

    __tablename__ = "remote_candidates"
    __table_args__ = (
        UniqueConstraint("outbound_search_id", "origin_candidate_id", name="uq_remote_candidates_origin"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    outbound_search_id: Mapped[int] = mapped_column(ForeignKey("outbound_searches.id"), index=True)
    origin_candidate_id: Mapped[int] = mapped_column(Integer)
    reference_id: Mapped[str] = mapped_column(String(128))
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(16))
    review_state: Mapped[str] = mapped_column(String(32))
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InboundSearch(Base):
    """A search a peer asked this node for: its remote case (a case of agency ``node:<peer
    country>`` under the pseudonymous reference the peer sent) and the search run here, plus what
    was last notified to the peer (``notified_digest``: a hash of the state sent)."""

    __tablename__ = "inbound_searches"
    __table_args__ = (UniqueConstraint("peer_id", "request_id", name="uq_inbound_searches_request"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    peer_id: Mapped[int] = mapped_column(ForeignKey("peers.id"), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    search_id: Mapped[int | None] = mapped_column(ForeignKey("searches.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    notified_digest: Mapped[str | None] = mapped_column(String(64))
    settled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), index=True)
    """Its state can no longer change: no more notifications."""
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    """The process running it until it is linked to its search (app/federation/idempotency.py)."""
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
