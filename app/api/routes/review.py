from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.deps import SessionDep, require
from app.api.openapi import refusal
from app.core.ids import RowId
from app.matching.models import ReviewState
from app.principals.models import Principal, Role
from app.review import service
from app.review.schemas import DecisionIn, DecisionOut, ReviewItem

router = APIRouter(tags=["review"])
Consular = Annotated[Principal, Depends(require(Role.CONSULAR))]


@router.get("/v1/review/candidates", response_model=list[ReviewItem], summary="Candidates to review, most urgent first")
def queue(
    actor: Consular,
    session: SessionDep,
    state: ReviewState = ReviewState.PENDING,
    gallery_id: RowId | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, object]]:
    """Only candidates pointing into the caller's own country's galleries, earliest case
    deadline first, with the enrolled record's identity attributes (the read is audited)."""
    with session.begin():
        return service.review_queue(session, actor, state, gallery_id, limit)


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
def decide(candidate_id: RowId, body: DecisionIn, actor: Consular, session: SessionDep) -> dict[str, object]:
    """A confirmation marks the case ``identified``. Every decision is audited with the officer."""
    with session.begin():
        candidate = service.decide(session, actor, candidate_id, body.decision == "confirmed", body.note)
        case = service.case_of(session, candidate)
        return {
            "id": candidate.id,
            "review_state": candidate.review_state,
            "case_id": case.id,
            "case_status": case.status,
        }
