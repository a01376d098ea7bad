from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


PENDING = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


class DeduplicationJob(Base):
    """A search of one gallery for records of the same person, run in blocks by the service's
    deduplication worker. ``blocks_done`` is its checkpoint: the pairs of those blocks are
    stored, and a restarted worker goes on from the next block, provided the gallery is still at
    ``change_seq`` (else it starts again). The thresholds and the tail fit are fixed once, before
    the first block."""

    __tablename__ = "deduplication_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id"), index=True)
    requested_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value, index=True)
    target_fmr: Mapped[float | None] = mapped_column(Float)
    """None until the job starts when the request named none (then: one false pair expected)."""
    max_pairs: Mapped[int] = mapped_column(Integer)
    method: Mapped[str | None] = mapped_column(String(16))
    change_seq: Mapped[int | None] = mapped_column(BigInteger)
    """The gallery's change number the thresholds and blocks were computed at."""
    blocks_done: Mapped[int] = mapped_column(Integer, default=0)
    blocks_total: Mapped[int | None] = mapped_column(Integer)
    match_threshold: Mapped[float | None] = mapped_column(Float)
    possible_threshold: Mapped[float | None] = mapped_column(Float)
    expected_false_pairs: Mapped[float | None] = mapped_column(Float)
    tail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The generalised Pareto fit the thresholds come from (matcher.tail.TailFit)."""
    pairs_found: Mapped[int] = mapped_column(Integer, default=0)
    """Every pair found, stored or not (only the best ``max_pairs`` are kept)."""
    error: Mapped[str | None] = mapped_column(String(200))
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    """The process running the job; none when no live process does, so that any may take it."""
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeduplicationPair(Base):
    """Two records of the job's gallery scoring above its ``possible`` threshold: reference ids
    and the score only, never a template."""

    __tablename__ = "deduplication_pairs"

    job_id: Mapped[int] = mapped_column(ForeignKey("deduplication_jobs.id", ondelete="CASCADE"), primary_key=True)
    reference_id_a: Mapped[str] = mapped_column(String(128), primary_key=True)
    reference_id_b: Mapped[str] = mapped_column(String(128), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(16))
