"""Consular review: candidates pointing into the officer's own country, earliest case deadline
first; a decision per candidate (confirmed, rejected, inconclusive); a final confirmation
identifies the case, and where the country's review policy asks for it, a confirmation is final
only once a second, different consul confirms (four-eyes). The API and the review pages call
these same use cases, so both leave the same audit trail."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, or_, select
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
from app.matching.views import (
    CandidateView,
    OfficerView,
    ReviewItemView,
    candidate_view,
    current_versions,
    review_item_view,
    reviewing_officers,
)
from app.principals.models import Principal
from app.review.exceptions import AlreadyDecided, NoteRequired, SameReviewer, UnknownCandidate
from app.review.policies import second_reviewer_required


class Decision(enum.StrEnum):
    """A consul's answer on a candidate, as face examiners give it: the same person, not the
    same person, or no conclusion from what the consulate holds."""

    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    INCONCLUSIVE = "inconclusive"


ACTION_OF = {
    Decision.CONFIRMED: Action.CANDIDATE_CONFIRM,
    Decision.REJECTED: Action.CANDIDATE_REJECT,
    Decision.INCONCLUSIVE: Action.CANDIDATE_MARK_INCONCLUSIVE,
}
AWAITING_DECISION = (ReviewState.PENDING.value, ReviewState.PENDING_SECOND_REVIEW.value)


@dataclass(frozen=True)
class DecisionView:
    id: int
    review_state: str
    case_id: int
    case_status: str
    reviewed_by: OfficerView | None
    reviewed_at: datetime | None
    first_reviewed_by: OfficerView | None
    first_reviewed_at: datetime | None


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
        candidates = [candidate for candidate, _, _ in rows]
        attributes, officers = _attributes(session, candidates), reviewing_officers(session, candidates)
        versions = current_versions(session, candidates)
        items = [
            review_item_view(c, case, search, attributes.get(c.record_id or 0), officers, versions)
            for c, case, search in rows
        ]
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


def _visible(
    session: Session, actor: Principal, candidate_id: int, *, lock: bool = False
) -> tuple[Candidate, Case, Search]:
    """The candidate if it points into the actor's country (404 otherwise); ``lock``: its row
    locked until the transaction ends, so that decisions on one candidate queue and each reads
    the state the previous one left."""
    query = _in_country(actor).where(Candidate.id == candidate_id)
    if lock:
        query = query.with_for_update(of=Candidate).execution_options(populate_existing=True)
    row = session.execute(query).first()
    if row is None:
        raise UnknownCandidate(f"candidate {candidate_id} not found")
    return row


def decide(sessions: Sessions, actor: Principal, candidate_id: int, decision: Decision, note: str) -> DecisionView:
    """Decide on a candidate of the actor's country while its case is open; the officer, the time
    and the note are kept and audited with the outcome.

    A confirmation marks the case identified, unless the country requires a second reviewer:
    then the first confirmation leaves the candidate ``pending_second_review`` and only a
    different consul's confirmation confirms it. That consul's rejection or inconclusive answer
    settles it instead; the first confirmation stays on the candidate and in the audit trail.
    Rejected and inconclusive candidates leave the case open for other candidates and searches.
    """
    if not note.strip():
        raise NoteRequired("a decision needs a note: what was checked and why")
    with transaction(sessions) as session:
        candidate, _, search = _visible(session, actor, candidate_id, lock=True)
        if candidate.review_state not in AWAITING_DECISION:
            raise AlreadyDecided(f"candidate {candidate_id} was already {candidate.review_state}")
        second_review = candidate.review_state == ReviewState.PENDING_SECOND_REVIEW.value
        if second_review and candidate.first_reviewed_by == actor.id:
            raise SameReviewer(f"candidate {candidate_id} needs a second consul: you gave the first confirmation")
        case = session.scalars(select(Case).where(Case.id == search.case_id).with_for_update()).one()
        ensure_open(case)
        now = utcnow()
        if (
            decision is Decision.CONFIRMED
            and not second_review
            and second_reviewer_required(session, candidate.country)
        ):
            candidate.review_state = ReviewState.PENDING_SECOND_REVIEW.value
            candidate.first_reviewed_by, candidate.first_reviewed_at, candidate.first_note = actor.id, now, note
        else:
            candidate.review_state = ReviewState(decision.value).value
            candidate.reviewed_by, candidate.reviewed_at, candidate.note = actor.id, now, note
        audit.append(
            session,
            actor,
            ACTION_OF[decision],
            f"candidate/{candidate.id}",
            [candidate.country, case.agency_country],
            outcome=decision.value,
            details={
                "case_id": case.id,
                "search_id": candidate.search_id,
                "review_state": candidate.review_state,
                "officers": [officer for officer in (candidate.first_reviewed_by, candidate.reviewed_by) if officer],
            },
        )
        if candidate.review_state == ReviewState.CONFIRMED.value:
            move(session, actor, case, CaseStatus.IDENTIFIED, f"candidate {candidate.id} confirmed")
        officers = reviewing_officers(session, [candidate])
        return DecisionView(
            candidate.id,
            candidate.review_state,
            case.id,
            case.status,
            officers.get(candidate.reviewed_by) if candidate.reviewed_by else None,
            candidate.reviewed_at,
            officers.get(candidate.first_reviewed_by) if candidate.first_reviewed_by else None,
            candidate.first_reviewed_at,
        )


def candidate_page(sessions: Sessions, actor: Principal, candidate_id: int) -> CandidatePage:
    """One candidate for review; the read of the record's attributes is audited."""
    with transaction(sessions) as session:
        candidate, case, search = _visible(session, actor, candidate_id)
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
        versions = current_versions(session, [candidate, *siblings])
        audit.append(
            session,
            actor,
            Action.CANDIDATE_READ,
            f"candidate/{candidate.id}",
            [candidate.country],
            details={"case_id": case.id},
        )
        return CandidatePage(
            candidate=review_item_view(
                candidate,
                case,
                search,
                record.attributes if record else None,
                reviewing_officers(session, [candidate]),
                versions,
            ),
            case_ref=case.external_ref,
            agency=case.agency,
            target_fpir=search.target_fpir,
            record=record_view(record) if record else None,
            siblings=[candidate_view(sibling, None, versions) for sibling in siblings],
        )


def next_pending(sessions: Sessions, actor: Principal) -> int | None:
    """The candidate of the officer's country awaiting this officer's decision (pending, or
    waiting for a second review someone else began) whose case deadline is nearest."""
    query = _in_country(actor).where(
        Case.status == CaseStatus.OPEN.value,
        or_(
            Candidate.review_state == ReviewState.PENDING.value,
            and_(
                Candidate.review_state == ReviewState.PENDING_SECOND_REVIEW.value,
                Candidate.first_reviewed_by != actor.id,
            ),
        ),
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
