from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime

SeqId = BigInteger().with_variant(Integer(), "sqlite")


class AuditPending(Base):
    """An event its writer has committed and the sequencer has not yet chained. Writers only
    insert here, each in its own transaction, reading and locking nothing shared, so that no
    writer ever waits on another's transaction; the sequencer moves these rows, in ``id`` order,
    into audit_events and deletes them. ``details`` already holds the countries the event
    touches; ``at`` is the time of the change."""

    __tablename__ = "audit_pending"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    principal_id: Mapped[int | None] = mapped_column(Integer)
    role: Mapped[str | None] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(20))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AuditEvent(Base):
    """One entry of the hash chain, written by the sequencer only. Database triggers refuse
    UPDATE and DELETE on this table."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    principal_id: Mapped[int | None] = mapped_column(Integer)
    role: Mapped[str | None] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(20))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's last sequence number and hash, one row, locked only by the sequencer while it
    chains pending events, so that two sequencers (processes, nodes) extend the chain one after
    another, never fork it; writers never touch it."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditEventCountry(Base):
    """A country an event touches, one row each, so that a country's auditor reads its events
    by index. The same countries are in the event's ``details["countries"]``, under its hash."""

    __tablename__ = "audit_event_countries"

    country: Mapped[str] = mapped_column(String(3), primary_key=True)
    seq: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=False)


class AuditTreeNode(Base):
    """The hash of a perfect subtree of the Merkle tree over events, stored once complete: the
    node at (level, idx) covers leaves [idx * 2**level, (idx + 1) * 2**level), leaf i being
    event seq i + 1. Any RFC 9162 proof is O(log n) of these."""

    __tablename__ = "audit_tree_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditTreeHead(Base):
    """How many events the sequencer has put in the tree, and its root; one row, locked by the
    sequencer (after the chain's head) so that two processes never extend the tree at once."""

    __tablename__ = "audit_tree_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed checkpoint, kept so that the latest is served and any may be shown again."""

    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str] = mapped_column(Text)
