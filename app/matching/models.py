from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow
from app.galleries.models import BigId

IDEMPOTENCY_KEY_LENGTH = 255
"""The longest ``Idempotency-Key`` kept (a UUID takes 36)."""


class SearchStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    EXPIRED = "expired"
    FAILED = "failed"


class ReviewState(enum.StrEnum):
    """Where a candidate stands in consular review. ``pending_second_review``: confirmed once
    where the country requires two consuls (four-eyes), waiting for a different consul;
    ``inconclusive``: the consul could neither confirm nor reject, the case stays open."""

    PENDING = "pending"
    PENDING_SECOND_REVIEW = "pending_second_review"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    INCONCLUSIVE = "inconclusive"


class Search(Base):
    """An identification (1:N) of a case's probes against the galleries its agreements allow.

    ``probes`` holds the probe templates until the retention period erases them;
    ``searched_galleries`` the galleries searched and ``skipped`` the presumed countries that
    could not be searched, and why.
    """

    __tablename__ = "searches"
    __table_args__ = (Index("uq_searches_idempotency_key", "case_id", "idempotency_key", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    modality: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    dimension: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(16))
    probes: Mapped[bytes | None] = mapped_column(LargeBinary)
    probe_count: Mapped[int] = mapped_column(Integer)
    searched_galleries: Mapped[list[int]] = mapped_column(JSON)
    skipped: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    max_candidates: Mapped[int] = mapped_column(Integer)
    target_fpir: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default=SearchStatus.QUEUED.value, index=True)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)  # the case linker's look
    submitted_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    error: Mapped[str | None] = mapped_column(String(200))
    allow_partial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    missing_shards: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """Per gallery, the shards that did not answer a search that accepted partial results."""
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    """The process holding the queued or running search (app/matching/leases.py); none when no
    live process holds it in memory, so that any may claim it."""
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """Until when the lease holds unless renewed: past it, the search may be claimed by another."""
    modalities: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """A multi-modal search's modalities, in the order their probes follow one another in
    ``probes``: each ``{modality, model, dimension, metric, probe_count, galleries}``; none for a
    single-modality search (its modality and format are the columns above)."""
    probe_qualities: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """The quality (0-100) of each probe sample searched that came with one: ``{modality, index,
    quality}``, ``index`` its position in the request."""
    dropped_samples: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """Probe samples not searched, being below the modality's minimum quality: ``{modality,
    index, quality, minimum}``."""
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH))
    """The ``Idempotency-Key`` its submitter sent, unique in its case: a resend of the request
    answers this search instead of running another (app/matching/service.py)."""
    request_digest: Mapped[str | None] = mapped_column(String(64))
    """With a key, SHA-256 of what was asked (:func:`app.matching.service.request_digest`): the
    same key with another request is refused."""


class Candidate(Base):
    """A record of a searched gallery whose decision score reached the search's loose threshold."""

    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"), index=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id"))
    record_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("records.id", ondelete="SET NULL"))
    reference_id: Mapped[str] = mapped_column(String(128))
    record_version: Mapped[int | None] = mapped_column(Integer)
    """The record's version when the candidate was found (none before revision 0016): the
    consul sees whether the record changed since."""
    country: Mapped[str] = mapped_column(String(3), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    decision_score: Mapped[float | None] = mapped_column(Float)
    """The score against the probe's cohort that the band was read from (none before 0007)."""
    band: Mapped[str] = mapped_column(String(16))
    match_threshold: Mapped[float] = mapped_column(Float)
    possible_threshold: Mapped[float] = mapped_column(Float)
    review_state: Mapped[str] = mapped_column(String(32), default=ReviewState.PENDING.value, index=True)
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("principals.id"))
    """The consul whose decision settled the candidate (the second one under four-eyes)."""
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(String(2000))
    first_reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("principals.id"))
    """Under four-eyes, the consul who confirmed first; kept whatever the second one decides."""
    first_reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_note: Mapped[str | None] = mapped_column(String(2000))
    modalities: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """On a multi-modal search, the person's score in each modality it was found in: ``{modality,
    gallery_id, record_id, score, decision_score, tail_probability, band_alone}``; ``score`` and
    ``decision_score`` of the candidate then hold the fused score, and ``gallery_id`` and
    ``record_id`` the modality that weighed most."""
    enrolment_qualities: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    """The quality of each enrolled sample of the record version matched (of each modality's
    record, on a multi-modal search) that came with one: ``{modality, index, quality}``, ``index``
    the sample's position in the record; none when no sample had one (or found before revision 0019)."""


class StoredCalibration(Base):
    """A gallery's calibration sample, as one process drew it (app/matching/calibrations.py):
    every process and node of the service reads the same one, so that a probe gets the same band
    whichever answers it, and none pays the leave-one-out searches again after a start. Scores,
    not templates: nothing biometric is stored here."""

    __tablename__ = "gallery_calibrations"

    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"), primary_key=True)
    statistic: Mapped[str] = mapped_column(String(128))
    """The decision statistic the sample was drawn with: a sample of another is not reused."""
    template_count: Mapped[int] = mapped_column(Integer)
    """The gallery's size when the sample was drawn; a sample is redrawn past a tenth of drift."""
    nonmated_decisions: Mapped[bytes] = mapped_column(LargeBinary)
    """Leave-one-out best non-mated decision scores, little-endian float64 (as drawn)."""
    nonmated_pairs: Mapped[bytes] = mapped_column(LargeBinary)
    """Non-mated comparison scores of random pairs, little-endian float32 (as drawn)."""
    drawn_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
