from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.core.numbers import Integer, Number
from app.matching.schemas import RATE


class DeduplicationIn(BaseModel):
    target_fmr: Number | None = Field(
        None,
        description="per-comparison FMR of the match band, as a fraction (1e-9) or a MOSIP integer (90); default: "
        "the FMR at which the whole gallery expects one false pair, 1 / (n(n-1)/2) for n templates",
        json_schema_extra=RATE,
    )
    max_pairs: Integer | None = Field(
        None, ge=1, le=1_000_000, description="at most this many pairs are kept, the best ones (default 100,000)"
    )


class DeduplicationProgress(BaseModel):
    blocks_done: int
    blocks_total: int | None = Field(description="known once the job has calibrated its thresholds")


class DuplicatePair(BaseModel):
    reference_id_a: str
    reference_id_b: str
    score: float
    band: str = Field(description="match: at or above the threshold at target_fmr; possible: at ten times the FMR")


class DeduplicationOut(BaseModel):
    id: int
    gallery_id: int
    status: str = Field(description="queued, running, done or failed")
    target_fmr: float | None
    max_pairs: int
    method: str | None = Field(description="exact (all pairs, GEMM) or pq_shortlist (PQ shortlist, exact re-rank)")
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: DeduplicationProgress
    threshold: float | None = Field(description="the match threshold at target_fmr, from the fitted non-mated tail")
    possible_threshold: float | None
    expected_false_pairs: float | None = Field(
        description="target_fmr x n(n-1)/2: false pairs the tail expects at the match threshold"
    )
    pairs_found: int = Field(description="pairs at or above the possible threshold, kept or not (see max_pairs)")
    error: str | None
    pairs: list[DuplicatePair] = Field(description="when done: each pair once, best first")
    clusters: list[list[str]] = Field(description="when done: connected components of the pairs, by reference id")


class DeduplicationAccepted(BaseModel):
    id: int
    status: str
