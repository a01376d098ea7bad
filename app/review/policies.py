"""Review policies: per country of origin, whether a confirmation needs a second consul of that
country (four-eyes), as examiners' hits are double-checked. The operator's admin sets it; the
country's consuls may read their own. A country without a stored policy needs one consul."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.core.countries import check_country
from app.db.base import utcnow
from app.db.session import Sessions, transaction, upsert_statement
from app.principals.models import Principal, Role
from app.review.exceptions import UnknownReviewPolicy
from app.review.models import ReviewPolicy


@dataclass(frozen=True)
class ReviewPolicyView:
    country: str
    second_reviewer_required: bool
    updated_at: datetime | None
    """None: never set, the default (one consul) applies."""
    updated_by: int | None


def set_policy(sessions: Sessions, actor: Principal, country: str, second_reviewer_required: bool) -> ReviewPolicyView:
    """Store the country's policy, audited with the value before and after. Candidates already
    waiting for a second review keep waiting for one: their first confirmation was given under
    four-eyes."""
    check_country(country)
    with transaction(sessions) as session:
        policy = _locked(session, actor, country)
        before = policy.second_reviewer_required
        policy.second_reviewer_required = second_reviewer_required
        policy.updated_at, policy.updated_by = utcnow(), actor.id
        audit.append(
            session,
            actor,
            Action.REVIEW_POLICY_SET,
            f"review-policy/{country}",
            [country],
            details={"second_reviewer_required": {"from": before, "to": second_reviewer_required}},
        )
        return _view(country, policy)


def _locked(session: Session, actor: Principal, country: str) -> ReviewPolicy:
    """The country's policy row, created with the default if absent, locked for this
    transaction: two admins setting a new country's policy at once queue on the row rather than
    both inserting it."""
    session.execute(
        upsert_statement(session, ReviewPolicy)
        .values(country=country, second_reviewer_required=False, updated_at=utcnow(), updated_by=actor.id)
        .on_conflict_do_nothing(index_elements=[ReviewPolicy.country])
    )
    return session.scalars(
        select(ReviewPolicy)
        .where(ReviewPolicy.country == country)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def read_policy(sessions: Sessions, actor: Principal, country: str) -> ReviewPolicyView:
    """An admin reads any country's policy, a consul only its own country's (404 otherwise)."""
    check_country(country)
    if actor.role == Role.CONSULAR.value and actor.country != country:
        raise UnknownReviewPolicy(f"no review policy for {country}")
    with sessions() as session:
        return _view(country, session.get(ReviewPolicy, country))


def second_reviewer_required(session: Session, country: str) -> bool:
    """Read in the deciding transaction, so that a decision follows the policy in force then."""
    required = session.scalar(select(ReviewPolicy.second_reviewer_required).where(ReviewPolicy.country == country))
    return bool(required)


def _view(country: str, policy: ReviewPolicy | None) -> ReviewPolicyView:
    if policy is None:
        return ReviewPolicyView(country, False, None, None)
    return ReviewPolicyView(country, policy.second_reviewer_required, policy.updated_at, policy.updated_by)
