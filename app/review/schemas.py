from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.core.numbers import Boolean
from app.core.text import text
from app.matching.score_schemas import ENROLMENT_QUALITIES, EnrolledSampleQuality, ModalityScoreOut, SampleQuality

RECORD_VERSION = (
    "the version of the record the candidate was found in (GET /v1/galleries/{id}/records/{reference_id}/history "
    "lists them); null on candidates found before records had versions"
)
RECORD_CHANGED_SINCE = (
    "true when the record was updated or erased after the candidate was found: the attributes read now are not "
    "those of the version that matched"
)
REVIEW_STATES = (
    "pending: awaiting a consul; pending_second_review: confirmed by one consul of a country that requires two "
    "(four-eyes), awaiting a different consul; confirmed; rejected; inconclusive: the consul could neither confirm "
    "nor reject, the case stays open"
)


class Officer(BaseModel):
    id: int = Field(description="the consul's principal id")
    name: str


class ReviewItem(BaseModel):
    id: int
    search_id: int
    case_id: int
    case_status: str
    deadline: datetime
    remaining_seconds: int = Field(description="time left before the detention deadline")
    gallery_id: int
    reference_id: str
    rank: int
    score: float
    band: str
    review_state: str = Field(description=REVIEW_STATES)
    attributes: dict[str, str] | None = Field(description="the enrolled record's identity attributes")
    record_version: int | None = Field(description=RECORD_VERSION)
    record_changed_since: bool = Field(description=RECORD_CHANGED_SINCE)
    note: str | None = Field(description="the note of the decision that settled the candidate")
    reviewed_at: datetime | None = Field(description="when the candidate was settled")
    reviewed_by: Officer | None = Field(
        description="the consul who settled the candidate (under four-eyes, the second one)"
    )
    first_reviewed_by: Officer | None = Field(
        description="under four-eyes, the consul who confirmed first; kept whatever the second consul decided"
    )
    first_reviewed_at: datetime | None
    first_note: str | None = Field(description="the first consul's note, under four-eyes")
    modalities: list[ModalityScoreOut] | None = Field(
        None, description="multi-modal search only: what each modality said of the person (see the search's candidates)"
    )
    probe_qualities: list[SampleQuality] = Field(
        default_factory=list,
        description="the quality (0-100, ISO/IEC 29794) of each probe sample the search used that came with one",
    )
    enrolment_qualities: list[EnrolledSampleQuality] = Field(default_factory=list, description=ENROLMENT_QUALITIES)


class DecisionIn(BaseModel):
    decision: Literal["confirmed", "rejected", "inconclusive"] = Field(
        description="confirmed: the same person; rejected: not the same person; inconclusive: no conclusion from "
        "what the consulate holds (the case stays open for other candidates and searches)"
    )
    note: Annotated[str, text(2000, min_length=1)] = Field(
        description="the officer's reasons, kept with the decision; required for every decision, and one of blanks "
        "only is refused with note_required (422)"
    )


class DecisionOut(BaseModel):
    id: int
    review_state: str = Field(description=REVIEW_STATES)
    case_id: int
    case_status: str = Field(description="identified once a confirmation is final; otherwise still open")
    reviewed_by: Officer | None = Field(
        description="the consul who settled the candidate (under four-eyes, the second one); null while a second "
        "review is awaited"
    )
    reviewed_at: datetime | None
    first_reviewed_by: Officer | None = Field(description="under four-eyes, the consul who confirmed first")
    first_reviewed_at: datetime | None


class ReviewPolicyIn(BaseModel):
    second_reviewer_required: Boolean = Field(
        description="true: a confirmation of a candidate in this country needs a second, different consul of the "
        "country (four-eyes); false: one consul's confirmation identifies the case"
    )


class ReviewPolicyOut(ReviewPolicyIn):
    country: str
    updated_at: datetime | None = Field(description="null: never set, the default (one consul) applies")
    updated_by: int | None = Field(description="principal id of the admin who set it")
