"""One view per resource of the search family (case file, search, candidate), built from the
database in one place for every front door: the API, the review pages, and adapters."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.db.base import utcnow
from app.federation.views import RemoteSearchView, remote_searches_of, with_remote
from app.galleries.models import Record
from app.matching.models import Candidate, ReviewState, Search
from app.principals.models import Principal


@dataclass(frozen=True)
class CandidateView:
    id: int
    search_id: int
    gallery_id: int
    country: str
    reference_id: str
    rank: int
    score: float
    decision_score: float | None
    band: str
    match_threshold: float
    possible_threshold: float
    review_state: str
    attributes: dict[str, Any] | None
    """The enrolled record's identity attributes, only where the viewer may read them."""
    note: str | None
    reviewed_at: datetime | None
    modalities: list[dict[str, Any]] | None
    """On a multi-modal search, what each modality said of the person."""
    record_version: int | None
    """The version of the record the candidate was found in (None before versions existed)."""
    record_changed_since: bool
    """The record was updated or erased since: what the consul reads is not what matched."""
    enrolment_qualities: list[dict[str, Any]]
    """The quality of each enrolled sample of the record version matched that had one, so that
    a consul can weigh a match against a poor enrolment."""


@dataclass(frozen=True)
class SearchView:
    id: int
    case_id: int
    status: str
    error: str | None
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline: datetime
    target_fpir: float
    searched_galleries: list[int]
    skipped: list[dict[str, str]]
    candidates: list[CandidateView]
    missing_shards: list[dict[str, Any]]
    modalities: list[dict[str, Any]] | None
    probe_qualities: list[dict[str, Any]]
    dropped_samples: list[dict[str, Any]]
    remote_searches: list[RemoteSearchView] = field(default_factory=list)
    """The parts sent to peer nodes (app/federation), one per country."""


@dataclass(frozen=True)
class CaseView:
    id: int
    external_ref: str
    agency: str
    detained_at: datetime
    detention_limit_days: int
    deadline: datetime
    presumed_countries: list[str]
    legal_basis: str
    status: str
    created_at: datetime
    searches: list[SearchView]


@dataclass(frozen=True)
class OfficerView:
    """A consul named in a candidate's review, as the country's other consuls see it."""

    id: int
    name: str


@dataclass(frozen=True)
class ReviewItemView(CandidateView):
    """A candidate as a consular officer reviews it, with its case's urgency and the consuls who
    decided on it: under four-eyes, the first confirmation stays beside the final decision."""

    case_id: int
    case_status: str
    deadline: datetime
    remaining_seconds: int
    reviewed_by: OfficerView | None
    first_reviewed_by: OfficerView | None
    first_reviewed_at: datetime | None
    first_note: str | None
    probe_qualities: list[dict[str, Any]]
    """The quality of each probe sample the search used (as sent), so that the consul can weigh
    a candidate found with a poor probe."""


def review_item_view(
    candidate: Candidate,
    case: Case,
    search: Search,
    attributes: dict[str, Any] | None,
    officers: dict[int, OfficerView],
    versions: dict[int, int],
) -> ReviewItemView:
    """``officers``: the reviewers named on the candidate, from ``reviewing_officers``;
    ``versions``: its record's current version, from ``current_versions``."""
    return ReviewItemView(
        **candidate_view(candidate, attributes, versions).__dict__,
        case_id=case.id,
        case_status=case.status,
        deadline=case.deadline,
        remaining_seconds=max(0, int((case.deadline - utcnow()).total_seconds())),
        reviewed_by=officers.get(candidate.reviewed_by) if candidate.reviewed_by else None,
        first_reviewed_by=officers.get(candidate.first_reviewed_by) if candidate.first_reviewed_by else None,
        first_reviewed_at=candidate.first_reviewed_at,
        first_note=candidate.first_note,
        probe_qualities=list(search.probe_qualities or []),
    )


def reviewing_officers(session: Session, candidates: list[Candidate]) -> dict[int, OfficerView]:
    """The consuls who decided on ``candidates``, by id, read in one statement."""
    ids = {i for c in candidates for i in (c.reviewed_by, c.first_reviewed_by) if i is not None}
    if not ids:
        return {}
    rows = session.execute(select(Principal.id, Principal.name).where(Principal.id.in_(ids)))
    return {officer_id: OfficerView(officer_id, name) for officer_id, name in rows}


def current_versions(session: Session, candidates: list[Candidate]) -> dict[int, int]:
    """The current version of the records ``candidates`` point to, by record id, read in one
    statement; an erased record is absent."""
    ids = {c.record_id for c in candidates if c.record_id is not None}
    if not ids:
        return {}
    rows = session.execute(select(Record.id, Record.version).where(Record.id.in_(ids)))
    return {record_id: version for record_id, version in rows}


def candidate_view(candidate: Candidate, attributes: dict[str, Any] | None, versions: dict[int, int]) -> CandidateView:
    """``versions``: the current version of the candidate's record, from ``current_versions``."""
    current = versions.get(candidate.record_id) if candidate.record_id is not None else None
    return CandidateView(
        id=candidate.id,
        search_id=candidate.search_id,
        gallery_id=candidate.gallery_id,
        country=candidate.country,
        reference_id=candidate.reference_id,
        rank=candidate.rank,
        score=candidate.score,
        decision_score=candidate.decision_score,
        band=candidate.band,
        match_threshold=candidate.match_threshold,
        possible_threshold=candidate.possible_threshold,
        review_state=candidate.review_state,
        attributes=attributes,
        note=candidate.note,
        reviewed_at=candidate.reviewed_at,
        modalities=candidate.modalities,
        record_version=candidate.record_version,
        record_changed_since=candidate.record_version is not None and current != candidate.record_version,
        enrolment_qualities=list(candidate.enrolment_qualities or []),
    )


def search_views(session: Session, searches: list[Search]) -> list[SearchView]:
    """Searches with their candidates, best first; identity attributes only for confirmed
    candidates (an agency learns who the person is once the country of origin confirms)."""
    candidates = (
        list(
            session.scalars(
                select(Candidate)
                .where(Candidate.search_id.in_([s.id for s in searches]))
                .order_by(Candidate.search_id, Candidate.rank)
            )
        )
        if searches
        else []
    )
    confirmed = [c.record_id for c in candidates if c.review_state == ReviewState.CONFIRMED.value and c.record_id]
    attributes = (
        {record.id: record.attributes for record in session.scalars(select(Record).where(Record.id.in_(confirmed)))}
        if confirmed
        else {}
    )
    remote = remote_searches_of(session, [s.id for s in searches])
    versions = current_versions(session, candidates)
    return [
        _with_remote(
            search_view(
                search,
                [
                    candidate_view(c, attributes.get(c.record_id) if c.record_id else None, versions)
                    for c in candidates
                    if c.search_id == search.id
                ],
            ),
            remote.get(search.id, []),
        )
        for search in searches
    ]


def _with_remote(view: SearchView, remote: list[RemoteSearchView]) -> SearchView:
    if not remote:
        return view
    status, skipped = with_remote(view.status, view.skipped, remote)
    return replace(view, status=status, skipped=skipped, remote_searches=remote)


def search_view(search: Search, candidates: list[CandidateView]) -> SearchView:
    return SearchView(
        id=search.id,
        case_id=search.case_id,
        status=search.status,
        error=search.error,
        submitted_at=search.submitted_at,
        started_at=search.started_at,
        finished_at=search.finished_at,
        deadline=search.deadline,
        target_fpir=search.target_fpir,
        searched_galleries=list(search.searched_galleries),
        skipped=list(search.skipped or []),
        candidates=candidates,
        missing_shards=list(search.missing_shards or []),
        modalities=search.modalities,
        probe_qualities=list(search.probe_qualities or []),
        dropped_samples=list(search.dropped_samples or []),
    )


def case_view(session: Session, case: Case) -> CaseView:
    searches = list(session.scalars(select(Search).where(Search.case_id == case.id).order_by(Search.id)))
    return CaseView(
        id=case.id,
        external_ref=case.external_ref,
        agency=case.agency,
        detained_at=case.detained_at,
        detention_limit_days=case.detention_limit_days,
        deadline=case.deadline,
        presumed_countries=list(case.presumed_countries),
        legal_basis=case.legal_basis,
        status=case.status,
        created_at=case.created_at,
        searches=search_views(session, searches),
    )
