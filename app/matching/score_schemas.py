"""What the API says of a probe's quality and of each modality's part in a fused candidate:
shared by the search and review bodies."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModalityScoreOut(BaseModel):
    modality: str
    gallery_id: int
    score: float = Field(description="the person's comparison score in this modality, in the gallery's metric")
    decision_score: float = Field(description="its decision score (score minus the probe's cohort mean)")
    tail_probability: float = Field(
        description="the fraction of this gallery's non-mated searches whose best decision score reaches it"
    )
    band_alone: str | None = Field(
        description="the band this modality alone would give (match, possible) at the search's FPIR; null: "
        "it alone would not list the person"
    )


class SampleQuality(BaseModel):
    modality: str
    index: int = Field(description="the sample's position in the request's probes (of its modality)")
    quality: float


class EnrolledSampleQuality(BaseModel):
    modality: str
    index: int = Field(description="the template's position in the record's templates (of its modality's record)")
    quality: float


ENROLMENT_QUALITIES = (
    "the quality (0-100, ISO/IEC 29794) of each template of the record version matched that was enrolled with one "
    "(on a multi-modal search, of each modality's record), as it was when the candidate was found: a strong score "
    "against a poor enrolment weighs less. Empty when none was given"
)


class DroppedSample(SampleQuality):
    minimum: float = Field(description="the modality's minimum quality (READMIT_MIN_PROBE_QUALITY)")
