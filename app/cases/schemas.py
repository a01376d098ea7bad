from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.cases.models import CaseStatus, LegalBasis
from app.core.countries import Country
from app.core.dates import Instant
from app.core.numbers import Integer
from app.core.text import text
from app.federation.schemas import RemoteSearchOut
from app.review.schemas import REVIEW_STATES


class CaseIn(BaseModel):
    external_ref: Annotated[str, text(128, min_length=1)] = Field(
        description="the agency's own reference, unique per agency"
    )
    detained_at: Instant = Field(
        description="start of detention, RFC 3339 with time zone; not in the future (invalid_detention_start, 422), "
        "and detained_at + detention_limit_days not already past (deadline_passed, 409)"
    )
    detention_limit_days: Integer = Field(ge=1, le=540, description="legal detention limit, e.g. 45 in France")
    presumed_countries: list[Country] = Field(min_length=1, max_length=10)
    legal_basis: LegalBasis


class CaseUpdate(BaseModel):
    status: Literal["unidentified", "closed"] = Field(
        description="unidentified: every channel tried without result; closed: the case ends"
    )


class CandidateState(BaseModel):
    id: int
    country: str
    rank: int
    score: float
    band: str
    review_state: str = Field(description=REVIEW_STATES)
    note: str | None = Field(None, description="the consul's note once the candidate is settled")


class SearchSummary(BaseModel):
    id: int
    status: str
    submitted_at: datetime
    finished_at: datetime | None
    candidates: list[CandidateState]
    remote_searches: list[RemoteSearchOut] = Field(default_factory=list)


class CaseOut(BaseModel):
    id: int
    external_ref: str
    agency: str
    detained_at: datetime
    detention_limit_days: int
    deadline: datetime
    presumed_countries: list[str]
    legal_basis: LegalBasis
    status: CaseStatus
    created_at: datetime
    searches: list[SearchSummary] = Field(default_factory=list)


class CaseLinkOut(BaseModel):
    case_id: int = Field(description="the other case, of the same agency")
    external_ref: str = Field(description="the agency's own reference of the other case")
    score: float = Field(description="the best score of this case's probes against the other case's")
    band: str = Field(description="match: at the link FMR (READMIT_LINK_FMR); possible: at ten times it")
    search_id: int = Field(description="the identification whose probes found the link")
    found_at: datetime
