"""Consular review: candidates pointing into the officer's own country, earliest case deadline
first; a decision per candidate; a confirmation identifies the case."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.cases.models import Case, CaseStatus
from app.cases.service import move
from app.core.errors import Conflict, NotFound
from app.db.base import utcnow
from app.galleries.models import Record
from app.matching.models import Candidate, ReviewState, Search
from app.principals.models import Principal


def review_queue(
    session: Session, actor: Principal, state: ReviewState, gallery_id: int | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = (
        select(Candidate, Search, Case, Record)
        .join(Search, Search.id == Candidate.search_id)
        .join(Case, Case.id == Search.case_id)
        .outerjoin(Record, Record.id == Candidate.record_id)
        .where(Candidate.country == actor.country, Candidate.review_state == state.value)
        .order_by(Case.deadline, Candidate.search_id, Candidate.rank)
        .limit(limit)
    )
    if gallery_id is not None:
        query = query.where(Candidate.gallery_id == gallery_id)
    now = utcnow()
    items = [
        {
            "id": candidate.id,
            "search_id": search.id,
            "case_id": case.id,
            "case_status": case.status,
            "deadline": case.deadline,
            "remaining_seconds": max(0, int((case.deadline - now).total_seconds())),
            "gallery_id": candidate.gallery_id,
            "reference_id": candidate.reference_id,
            "rank": candidate.rank,
            "score": candidate.score,
            "band": candidate.band,
            "review_state": candidate.review_state,
            "attributes": record.attributes if record is not None else None,
            "note": candidate.note,
            "reviewed_at": candidate.reviewed_at,
        }
        for candidate, search, case, record in session.execute(query)
    ]
    audit.append(
        session,
        actor,
        "review.list",
        f"review/{actor.country}",
        details={"state": state.value, "candidates": [item["id"] for item in items]},
    )
    return items


def visible_candidate(session: Session, actor: Principal, candidate_id: int) -> Candidate:
    candidate = session.get(Candidate, candidate_id)
    if candidate is None or candidate.country != actor.country:
        raise NotFound(f"candidate {candidate_id} not found")
    return candidate


def decide(session: Session, actor: Principal, candidate_id: int, confirmed: bool, note: str) -> Candidate:
    candidate = visible_candidate(session, actor, candidate_id)
    if candidate.review_state != ReviewState.PENDING.value:
        raise Conflict(f"candidate {candidate_id} was already {candidate.review_state}", code="already_decided")
    search = session.get(Search, candidate.search_id)
    case = session.scalar(select(Case).where(Case.id == search.case_id).with_for_update()) if search else None
    if case is None or case.status != CaseStatus.OPEN.value:
        raise Conflict("the case is no longer open", code="case_not_open")
    if case.deadline <= utcnow():
        raise Conflict("the case's detention deadline has passed", code="deadline_passed")
    candidate.review_state = (ReviewState.CONFIRMED if confirmed else ReviewState.REJECTED).value
    candidate.reviewed_by, candidate.reviewed_at, candidate.note = actor.id, utcnow(), note
    audit.append(
        session,
        actor,
        f"candidate.{candidate.review_state}",
        f"candidate/{candidate.id}",
        details={"case_id": case.id, "search_id": candidate.search_id},
    )
    if confirmed:
        move(session, actor, case, CaseStatus.IDENTIFIED, f"candidate {candidate.id} confirmed")
    return candidate


def consular_may_read(session: Session, actor: Principal, record_id: int) -> bool:
    """A consul may read a record of its country only when a candidate points to it."""
    return (
        session.scalar(
            select(Candidate.id).where(Candidate.record_id == record_id, Candidate.country == actor.country).limit(1)
        )
        is not None
    )


def case_of(session: Session, candidate: Candidate) -> Case:
    return session.scalars(
        select(Case).join(Search, Search.case_id == Case.id).where(Search.id == candidate.search_id)
    ).one()


def candidate_page(session: Session, actor: Principal, candidate_id: int) -> dict[str, Any]:
    """One candidate for review with its case, record attributes and the other candidates of the
    same search in the officer's country; the read of attributes is audited."""
    candidate = visible_candidate(session, actor, candidate_id)
    search = session.get(Search, candidate.search_id)
    case = session.get(Case, search.case_id) if search else None
    record = session.get(Record, candidate.record_id) if candidate.record_id else None
    siblings = list(
        session.scalars(
            select(Candidate)
            .where(
                Candidate.search_id == candidate.search_id,
                Candidate.country == actor.country,
                Candidate.id != candidate.id,
            )
            .order_by(Candidate.rank)
        )
    )
    audit.append(
        session, actor, "candidate.read", f"candidate/{candidate.id}", details={"case_id": case.id if case else None}
    )
    return {"candidate": candidate, "search": search, "case": case, "record": record, "siblings": siblings}


def next_pending(session: Session, actor: Principal) -> int | None:
    """The pending candidate of the officer's country whose case deadline is nearest."""
    return session.scalar(
        select(Candidate.id)
        .join(Search, Search.id == Candidate.search_id)
        .join(Case, Case.id == Search.case_id)
        .where(
            Candidate.country == actor.country,
            Candidate.review_state == ReviewState.PENDING.value,
            Case.status == "open",
        )
        .order_by(Case.deadline, Candidate.search_id, Candidate.rank)
        .limit(1)
    )
