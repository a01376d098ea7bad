"""Consular review: candidates pointing into the officer's own country, earliest case deadline
first; a decision per candidate; a confirmation identifies the case. The API and the review
pages call these same use cases, so both leave the same audit trail."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.models import Case, CaseStatus
from app.cases.service import ensure_open, move
from app.db.base import utcnow
from app.db.session import Sessions, transaction
from app.galleries.exceptions import UnknownRecord
from app.galleries.models import Record
from app.galleries.service import RecordView, find_record, record_view
from app.matching.models import Candidate, ReviewState, Search
from app.matching.views import CandidateView, ReviewItemView, candidate_view, review_item_view
from app.principals.models import Principal
from app.review.exceptions import AlreadyDecided, UnknownCandidate


class Decision(enum.StrEnum):
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


@dataclass(frozen=True)
class DecisionView:
    id: int
    review_state: str
    case_id: int
    case_status: str


@dataclass(frozen=True)
class CandidatePage:
    """One candidate with what an officer needs to decide: the case, the enrolled record, and
    the search's other candidates in the officer's country."""

    candidate: ReviewItemView
    case_ref: str
    agency: str
    target_fpir: float
    record: RecordView | None
    siblings: list[CandidateView]


def _in_country(actor: Principal) -> Select[Candidate, Case, Search]:
    """The actor's country's candidates with their case and search, most urgent first."""
    return (
        select(Candidate, Case, Search)
        .join(Search, Search.id == Candidate.search_id)
        .join(Case, Case.id == Search.case_id)
        .where(Candidate.country == actor.country)
        .order_by(Case.deadline, Candidate.search_id, Candidate.rank)
    )


def review_queue(
    sessions: Sessions, actor: Principal, state: ReviewState, gallery_id: int | None = None, limit: int = 100
) -> list[ReviewItemView]:
    """Candidates pointing into the actor's country, earliest case deadline first, with the
    enrolled record's attributes; the read is audited."""
    query = _in_country(actor).where(Candidate.review_state == state.value).limit(limit)
    if gallery_id is not None:
        query = query.where(Candidate.gallery_id == gallery_id)
    with transaction(sessions) as session:
        rows = session.execute(query).all()
        attributes = _attributes(session, [candidate for candidate, _, _ in rows])
        items = [review_item_view(c, case, attributes.get(c.record_id or 0)) for c, case, _ in rows]
        audit.append(
            session,
            actor,
            Action.CANDIDATE_LIST,
            f"review/{actor.country}",
            [actor.country],
            details={"state": state.value, "candidates": [item.id for item in items]},
        )
    return items


def _attributes(session: Session, candidates: list[Candidate]) -> dict[int, dict[str, str]]:
    ids = [c.record_id for c in candidates if c.record_id]
    if not ids:
        return {}
    return dict(session.execute(select(Record.id, Record.attributes).where(Record.id.in_(ids))).all())


def _visible(session: Session, actor: Principal, candidate_id: int) -> tuple[Candidate, Case, Search]:
    row = session.execute(_in_country(actor).where(Candidate.id == candidate_id)).first()
    if row is None:
        raise UnknownCandidate(f"candidate {candidate_id} not found")
    return row


def decide(sessions: Sessions, actor: Principal, candidate_id: int, decision: Decision, note: str) -> DecisionView:
    """Confirm or reject a candidate of the actor's country while its case is open; a
    confirmation marks the case identified. The officer and the note are kept and audited."""
    with transaction(sessions) as session:
        candidate, _, search = _visible(session, actor, candidate_id)
        if candidate.review_state != ReviewState.PENDING.value:
            raise AlreadyDecided(f"candidate {candidate_id} was already {candidate.review_state}")
        case = session.scalars(select(Case).where(Case.id == search.case_id).with_for_update()).one()
        ensure_open(case)
        confirmed = decision is Decision.CONFIRMED
        candidate.review_state = (ReviewState.CONFIRMED if confirmed else ReviewState.REJECTED).value
        candidate.reviewed_by, candidate.reviewed_at, candidate.note = actor.id, utcnow(), note
        audit.append(
            session,
            actor,
            Action.CANDIDATE_CONFIRM if confirmed else Action.CANDIDATE_REJECT,
            f"candidate/{candidate.id}",
            [candidate.country, case.agency_country],
            details={"case_id": case.id, "search_id": candidate.search_id},
        )
        if confirmed:
            move(session, actor, case, CaseStatus.IDENTIFIED, f"candidate {candidate.id} confirmed")
        return DecisionView(candidate.id, candidate.review_state, case.id, case.status)


def candidate_page(sessions: Sessions, actor: Principal, candidate_id: int) -> CandidatePage:
    """One candidate for review; the read of the record's attributes is audited."""
    with transaction(sessions) as session:
        candidate, case, search = _visible(session, actor, candidate_id)
        record = session.get(Record, candidate.record_id) if candidate.record_id else None
        siblings = session.scalars(
            select(Candidate)
            .where(
                Candidate.search_id == candidate.search_id,
                Candidate.country == actor.country,
                Candidate.id != candidate.id,
            )
            .order_by(Candidate.rank)
        )
        audit.append(
            session,
            actor,
            Action.CANDIDATE_READ,
            f"candidate/{candidate.id}",
            [candidate.country],
            details={"case_id": case.id},
        )
        return CandidatePage(
            candidate=review_item_view(candidate, case, record.attributes if record else None),
            case_ref=case.external_ref,
            agency=case.agency,
            target_fpir=search.target_fpir,
            record=record_view(record) if record else None,
            siblings=[candidate_view(sibling, None) for sibling in siblings],
        )


def next_pending(sessions: Sessions, actor: Principal) -> int | None:
    """The pending candidate of the officer's country whose case deadline is nearest."""
    query = _in_country(actor).where(
        Candidate.review_state == ReviewState.PENDING.value, Case.status == CaseStatus.OPEN.value
    )
    with sessions() as session:
        row = session.execute(query.limit(1)).first()
    return row[0].id if row else None


def read_candidate_record(sessions: Sessions, actor: Principal, gallery_id: int, reference_id: str) -> RecordView:
    """A consul reads a record of its own country only when a candidate points to it; anything
    else is 404. The read is audited."""
    with transaction(sessions) as session:
        record = find_record(session, gallery_id, reference_id, actor.country)
        pointed = session.scalar(
            select(Candidate.id).where(Candidate.record_id == record.id, Candidate.country == actor.country).limit(1)
        )
        if pointed is None:
            raise UnknownRecord(f"record {reference_id} not found in gallery {gallery_id}")
        audit.append(session, actor, Action.RECORD_READ, f"gallery/{gallery_id}/record/{reference_id}", [actor.country])
        return record_view(record)
