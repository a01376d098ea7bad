from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import Consular, SessionsDep
from app.api.openapi import refusal
from app.core.ids import RowId
from app.matching.models import ReviewState
from app.matching.views import ReviewItemView
from app.review import service
from app.review.schemas import DecisionIn, DecisionOut, ReviewItem

router = APIRouter(tags=["review"])


@router.get("/v1/review/candidates", response_model=list[ReviewItem], summary="Candidates to review, most urgent first")
def list_review_candidates(
    actor: Consular,
    sessions: SessionsDep,
    state: ReviewState = ReviewState.PENDING,
    gallery_id: RowId | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ReviewItemView]:
    """Only candidates pointing into the caller's own country's galleries, earliest case
    deadline first, with the enrolled record's identity attributes (the read is audited)."""
    return service.review_queue(sessions, actor, state, gallery_id, limit)


@router.post(
    "/v1/candidates/{candidate_id}/decision",
    response_model=DecisionOut,
    summary="Confirm or reject",
    responses={
        409: refusal(
            "already_decided: the candidate was decided before; case_not_open, deadline_passed: the case "
            "can no longer be identified"
        )
    },
)
def decide_candidate(
    candidate_id: RowId, body: DecisionIn, actor: Consular, sessions: SessionsDep
) -> service.DecisionView:
    """A confirmation marks the case ``identified``. Every decision is audited with the officer."""
    return service.decide(sessions, actor, candidate_id, service.Decision(body.decision), body.note)
