from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints


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
    review_state: str
    attributes: dict[str, str] | None = Field(description="the enrolled record's identity attributes")
    note: str | None
    reviewed_at: datetime | None


class DecisionIn(BaseModel):
    decision: Literal["confirmed", "rejected"]
    note: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        description="the officer's reasons, kept with the decision"
    )


class DecisionOut(BaseModel):
    id: int
    review_state: str
    case_id: int
    case_status: str
