from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from app.core.countries import Country
from app.core.ids import BodyRowId
from app.core.modalities import Modality
from app.core.numbers import Boolean, Integer, Number
from app.federation.schemas import RemoteSearchOut
from app.galleries.schemas import Sample, TemplateFormatIn
from app.matching.score_schemas import (
    ENROLMENT_QUALITIES,
    DroppedSample,
    EnrolledSampleQuality,
    ModalityScoreOut,
    SampleQuality,
)
from app.review.schemas import RECORD_CHANGED_SINCE, RECORD_VERSION, REVIEW_STATES

PROBE_CHOICE: JsonDict = {
    # if/then/else rather than oneOf, so that a generated client keeps one model class
    "if": {"required": ["probes"], "properties": {"probes": {"type": "array"}}},
    "then": {"properties": {"probes_b64": {"type": "null"}}},
    "else": {"required": ["probes_b64"], "properties": {"probes_b64": {"type": "array"}}},
}
PROBES = ConfigDict(json_schema_extra=PROBE_CHOICE)
"""Probes come as JSON floats or as base64, exactly one of the two (else invalid_template, 422)."""

Probe = Annotated[
    Sample,
    Field(json_schema_extra={"minItems": 1, "maxItems": 4096}),
]
"""One sample: as many floats as the template format's dimension (else invalid_template), finite,
not all zero."""

ProbeB64 = Annotated[
    str,
    Field(json_schema_extra={"pattern": r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"}),
]
"""One sample as base64 of little-endian float32: 4 bytes a dimension (else invalid_template)."""

RATE: JsonDict = {
    "anyOf": [
        {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        {"type": "integer", "minimum": 1},
        {"type": "null"},
    ]
}
"""A false-positive rate as the service reads it: a fraction below 1 or a MOSIP integer (0 and
null mean the configured default); anything else is refused with invalid_fpir or invalid_fmr."""


Quality = Annotated[Number, Field(ge=0, le=100)]
"""A sample's quality score, ISO/IEC 29794: NFIQ 2 for fingerprints, OFIQ for faces."""

QUALITIES_DESCRIPTION = (
    "one quality score (0-100, ISO/IEC 29794: NFIQ 2 for fingers, OFIQ for faces) per probe sample, null where "
    "unknown; a sample below READMIT_MIN_PROBE_QUALITY for its modality is dropped (named in dropped_samples), a "
    "probe with none left is refused with low_quality (422). Not one per sample: invalid_quality (422)"
)


class ModalityProbesIn(BaseModel):
    """One modality of a multi-modal identification."""

    model_config = PROBES

    modality: Modality = Field(examples=["finger"])
    template_format: TemplateFormatIn = Field(
        description="the probes' format; each country's gallery of the modality for this model must have the same "
        "dimension and metric (else invalid_template, 422)"
    )
    probes: list[Probe] | None = Field(None, description="samples of the one person in this modality, JSON floats")
    probes_b64: list[ProbeB64] | None = Field(None, description="samples as base64 little-endian float32")
    qualities: list[Quality | None] | None = Field(None, description=QUALITIES_DESCRIPTION)


SINGLE_FIELDS = ("modality", "template_format", "probes", "probes_b64", "qualities")


class IdentificationIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            # a multi-modal request names none of the single-modality fields; a single-modality one
            # names its modality and format, and its probes as JSON floats or base64 (see PROBES)
            "if": {"required": ["modalities"], "properties": {"modalities": {"type": "array"}}},
            "then": {"properties": {name: {"type": "null"} for name in SINGLE_FIELDS}},  # type: ignore[misc]
            "else": {"required": ["modality", "template_format"], **PROBE_CHOICE},
        }
    )

    modality: Modality | None = Field(None, examples=["face"], description="single-modality form: the modality")
    template_format: TemplateFormatIn | None = Field(
        None,
        description="single-modality form: the probes' format; each country's gallery of the modality for this "
        "model must have the same dimension and metric (else invalid_template, 422)",
    )
    probes: list[Probe] | None = Field(
        None, description="samples of the one person, JSON floats, each of the format's dimension"
    )
    probes_b64: list[ProbeB64] | None = Field(None, description="samples as base64 little-endian float32")
    qualities: list[Quality | None] | None = Field(None, description=QUALITIES_DESCRIPTION)
    modalities: list[ModalityProbesIn] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="multi-modal form, instead of modality, template_format, probes and qualities: the person's "
        "samples of each modality (each modality once). Each is searched in the presumed countries' gallery of "
        "that modality and format; candidates are people (a country's reference_id), ranked by a fused score: "
        "each modality's decision score mapped to its non-mated tail probability in its own gallery's calibration "
        "sample, -log of these summed (Fisher's method / likelihood-ratio fusion under independence), banded at "
        "thresholds calibrated for the search's FPIR on fused non-mated searches. A person found in one modality "
        "only is ranked on it. Both forms, or neither: validation_error (422)",
    )
    countries: list[Country] | None = Field(
        None,
        description="default: the case's presumed countries; others are refused with country_not_presumed (422)",
    )
    max_candidates: Integer = Field(30, ge=1, le=200)
    target_fpir: Number | None = Field(
        None,
        description="FPIR of the match band as a fraction (0.001) or a MOSIP integer (30); "
        "default: the service's configured FPIR",
        json_schema_extra=RATE,
    )
    wait_ms: Integer = Field(2000, ge=0, le=30_000, description="how long to wait for the result before 202")
    retry_unavailable_peers: Boolean = Field(
        False,
        description="a country searched at a peer node that does not answer is skipped with peer_unavailable; "
        "true: the request is resent until the case's deadline, and its candidates appear when the peer answers",
    )
    allow_partial_results: Boolean = Field(
        False,
        description="on a sharded gallery (Ray backend) with a shard down: answer from the shards that are up and "
        "name the others in missing_shards, instead of failing with shard_unavailable",
    )

    @model_validator(mode="after")
    def one_form(self) -> IdentificationIn:
        """Exactly one of the two forms, each modality once."""
        if self.modalities is None:
            if self.modality is None or self.template_format is None:
                raise ValueError("give modality, template_format and probes, or modalities")
            return self
        named = [name for name in SINGLE_FIELDS if getattr(self, name) is not None]
        if named:
            raise ValueError(f"modalities replaces {', '.join(named)}: give one form, not both")
        seen = [entry.modality for entry in self.modalities]
        if len(set(seen)) < len(seen):
            raise ValueError(f"each modality at most once, got {', '.join(seen)}")
        return self


class SkippedCountry(BaseModel):
    country: str
    reason: str = Field(
        description="no_agreement, no_gallery; for a country searched at a peer node: peer_unavailable, or the "
        "peer's refusal (no_agreement at the peer)"
    )


class SearchModalityOut(BaseModel):
    modality: str
    template_format: dict[str, object] = Field(description="{model, dimension, metric}")
    probe_count: int = Field(description="samples searched (after those dropped for quality)")
    searched_galleries: list[int]


class CandidateOut(BaseModel):
    id: int
    gallery_id: int
    country: str
    reference_id: str
    record_version: int | None = Field(None, description=RECORD_VERSION)
    record_changed_since: bool = Field(False, description=RECORD_CHANGED_SINCE)
    rank: int
    score: float = Field(
        description="the comparison score of the probe and the record, in the gallery's metric; on a multi-modal "
        "search the fused score (sum over modalities of -log non-mated tail probability)"
    )
    decision_score: float | None = Field(
        None,
        description="what the band is read from: the score minus the mean score of the probe's cohort (the records "
        "it ranks 3rd to 10th, apart from this one), i.e. how far this record stands above the strangers the probe "
        "resembles; thresholds calibrated on the gallery's own leave-one-out searches. Null on candidates found "
        "before decision scores existed",
    )
    band: str = Field(
        description="match: decision score at or above the gallery's threshold at the search's FPIR; possible: at 10x "
        "that FPIR"
    )
    review_state: str = Field(description=REVIEW_STATES)
    note: str | None = Field(
        None, description="the consul's note once the candidate is settled (why confirmed, rejected or inconclusive)"
    )
    reviewed_at: datetime | None = Field(None, description="when the candidate was settled")
    attributes: dict[str, str] | None = Field(None, description="identity attributes, once confirmed")
    modalities: list[ModalityScoreOut] | None = Field(
        None,
        description="multi-modal search only: the person's score in each modality found (a modality missing from "
        "the list did not find the person); gallery_id and reference_id are those of the modality that weighed most",
    )
    enrolment_qualities: list[EnrolledSampleQuality] = Field(default_factory=list, description=ENROLMENT_QUALITIES)


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
    remote_searches: list[RemoteSearchOut] = Field(
        default_factory=list,
        description="countries with no gallery here searched at their peer node: status, candidates and their "
        "review states as the peer's consuls leave them",
    )
    modalities: list[SearchModalityOut] | None = Field(None, description="multi-modal search only: its modalities")
    probe_qualities: list[SampleQuality] = Field(
        default_factory=list, description="the quality of each probe sample searched that came with one"
    )
    dropped_samples: list[DroppedSample] = Field(
        default_factory=list,
        description="probe samples not searched, below their modality's minimum quality (READMIT_MIN_PROBE_QUALITY)",
    )


class VerificationIn(BaseModel):
    model_config = PROBES

    gallery_id: BodyRowId
    reference_id: str
    probes: list[Probe] | None = Field(None, description="samples of the one person, of the gallery's dimension")
    probes_b64: list[ProbeB64] | None = Field(None, description="samples as base64 little-endian float32")
    target_fmr: Number | None = Field(
        None, description="FMR of the decision; default: the configured FMR", json_schema_extra=RATE
    )


class VerificationOut(BaseModel):
    score: float
    decision: str = Field(description="match or no_match at the calibrated threshold")
    threshold: float
    target_fmr: float
    calibration_resolved: bool
