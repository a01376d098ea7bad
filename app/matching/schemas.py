from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from app.core.ids import RowId
from app.galleries.schemas import TemplateFormatIn

Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Modality = Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,32}$")]


class IdentificationIn(BaseModel):
    modality: Modality = Field(examples=["face"])
    template_format: TemplateFormatIn
    probes: list[list[float]] | None = Field(None, description="samples of the one person, JSON floats")
    probes_b64: list[str] | None = Field(None, description="samples as base64 little-endian float32")
    countries: list[Country] | None = Field(None, description="default: the case's presumed countries")
    max_candidates: int = Field(30, ge=1, le=200)
    target_fpir: float | None = Field(
        None,
        description="FPIR of the match band as a fraction (0.001) or a MOSIP integer (30); "
        "default: the service's configured FPIR",
    )
    wait_ms: int = Field(2000, ge=0, le=30_000, description="how long to wait for the result before 202")
    allow_partial_results: bool = Field(
        False,
        description="on a sharded gallery (Ray backend) with a shard down: answer from the shards that are up and "
        "name the others in missing_shards, instead of failing with shard_unavailable",
    )


class SkippedCountry(BaseModel):
    country: str
    reason: str = Field(description="no_agreement, no_gallery")


class CandidateOut(BaseModel):
    id: int
    gallery_id: int
    country: str
    reference_id: str
    rank: int
    score: float
    band: str = Field(description="match: above the threshold at the search's FPIR; possible: at 10x that FPIR")
    review_state: str
    attributes: dict[str, str] | None = Field(None, description="identity attributes, once confirmed")


class MissingShards(BaseModel):
    gallery_id: int
    shards: list[int] = Field(description="shards that did not answer: their records were not searched")


class SearchOut(BaseModel):
    id: int
    case_id: int
    status: str = Field(description="queued, running, done, expired or failed")
    error: str | None = Field(
        None, description="why a failed search failed, as a stable code (shard_unavailable: submit it again later)"
    )
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline: datetime
    target_fpir: float
    searched_galleries: list[int]
    skipped: list[SkippedCountry]
    candidates: list[CandidateOut]
    missing_shards: list[MissingShards] = Field(
        default_factory=list,
        description="only for a search with allow_partial_results: galleries searched without some of their shards",
    )


class VerificationIn(BaseModel):
    gallery_id: RowId
    reference_id: str
    probes: list[list[float]] | None = None
    probes_b64: list[str] | None = None
    target_fmr: float | None = Field(None, description="FMR of the decision; default: the configured FMR")


class VerificationOut(BaseModel):
    score: float
    decision: str = Field(description="match or no_match at the calibrated threshold")
    threshold: float
    target_fmr: float
    calibration_resolved: bool
