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
    summary="Confirm, reject, or answer inconclusive",
    responses={
        409: refusal(
            "already_decided: the candidate was decided before; same_reviewer: under four-eyes, the consul who "
            "confirmed first cannot give the second decision; case_not_open, deadline_passed: the case can no "
            "longer be identified"
        ),
    },
)
def decide_candidate(
    candidate_id: RowId, body: DecisionIn, actor: Consular, sessions: SessionsDep
) -> service.DecisionView:
    """A confirmation marks the case ``identified``. Where the candidate's country requires a
    second reviewer (``PUT /v1/review-policies/{country}``), the first confirmation answers
    ``pending_second_review`` with the case still open, and a different consul of the country
    decides next: confirmed identifies the case, rejected or inconclusive settles the candidate
    (the first confirmation stays on it). ``inconclusive`` leaves the case open; border police
    see the state and the note in their case and search reads. A note of blanks only is
    refused with ``note_required`` (422). Every decision is audited with the officer(s) and the
    outcome."""
    return service.decide(sessions, actor, candidate_id, service.Decision(body.decision), body.note)
