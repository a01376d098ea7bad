from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import Admin, AdminOrConsular, SessionsDep
from app.core.countries import Country
from app.review import policies
from app.review.policies import ReviewPolicyView
from app.review.schemas import ReviewPolicyIn, ReviewPolicyOut

router = APIRouter(prefix="/v1/review-policies", tags=["review"])


@router.put("/{country}", response_model=ReviewPolicyOut, summary="Set a country's review policy (four-eyes)")
def set_review_policy(country: Country, body: ReviewPolicyIn, actor: Admin, sessions: SessionsDep) -> ReviewPolicyView:
    """Whether a confirmation of a candidate in ``country`` (the country of origin) needs a second,
    different consul of that country. Applies to decisions from now on; candidates already
    ``pending_second_review`` still need their second review. Audited (``review_policy.set``)."""
    return policies.set_policy(sessions, actor, country, body.second_reviewer_required)


@router.get("/{country}", response_model=ReviewPolicyOut, summary="Read a country's review policy")
def read_review_policy(country: Country, actor: AdminOrConsular, sessions: SessionsDep) -> ReviewPolicyView:
    """Admins read any country's policy, consuls their own country's (another country's is 404).
    A country never set answers the default: ``second_reviewer_required`` false."""
    return policies.read_policy(sessions, actor, country)
