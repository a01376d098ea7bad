"""Identification and verification requests: what may be searched, and reading the results.

A search targets, for each requested country, the gallery of the requested modality and template
format, provided an agreement between the agency's state and that country covers the modality on
the day; every other country is reported as skipped with the reason, never silently dropped.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agreements.service import agreement_in_force
from app.audit import service as audit
from app.cases.models import Case
from app.cases.service import ensure_searchable, visible_case
from app.core.config import Settings
from app.core.errors import Invalid, NotFound
from app.db.base import utcnow
from app.galleries.models import Gallery, Record
from app.galleries.service import template_format
from app.galleries.templates import decode_templates, to_bytes
from app.matching.models import Candidate, ReviewState, Search, SearchStatus
from app.matching.rates import rate_from_request
from app.matching.schemas import IdentificationIn
from app.principals.models import Principal
from matcher import CalibrationError, Metric, TemplateFormat


def rate_or_invalid(value: float, what: str) -> float:
    try:
        return rate_from_request(value)
    except CalibrationError as error:
        raise Invalid(str(error), code=f"invalid_{what}") from error


def resolve_targets(
    session: Session, case: Case, modality: str, fmt: TemplateFormat, countries: list[str]
) -> tuple[list[int], list[dict[str, str]]]:
    targets, skipped = [], []
    today = utcnow().date()
    for country in countries:
        if not agreement_in_force(session, case.agency_country, country, modality, today):
            skipped.append({"country": country, "reason": "no_agreement"})
            continue
        gallery = session.scalar(
            select(Gallery).where(Gallery.country == country, Gallery.modality == modality, Gallery.model == fmt.model)
        )
        if gallery is None:
            skipped.append({"country": country, "reason": "no_gallery"})
            continue
        if template_format(gallery) != fmt:
            raise Invalid(
                f"{country}'s {modality} gallery for {fmt.model} holds {gallery.dimension}-d {gallery.metric} "
                f"templates, not {fmt.dimension}-d {fmt.metric.value}",
                code="invalid_template",
            )
        targets.append(gallery.id)
    return targets, skipped


def submit_identification(
    session: Session, actor: Principal, case_id: int, request: IdentificationIn, settings: Settings
) -> Search:
    """Validate and store an identification; the scheduler runs it. A search with no gallery to
    search (every country skipped) is done at once, with no candidate."""
    case = visible_case(session, actor, case_id, for_update=True)
    ensure_searchable(case)
    fmt = TemplateFormat(
        request.template_format.model, request.template_format.dimension, Metric(request.template_format.metric)
    )
    probes = decode_templates(fmt, request.probes, request.probes_b64, settings.max_probes, what="probe")
    fpir = rate_or_invalid(request.target_fpir or settings.default_fpir, "fpir")
    countries = sorted(set(request.countries or case.presumed_countries))
    outside = [c for c in countries if c not in case.presumed_countries]
    if outside:
        raise Invalid(f"not presumed countries of this case: {', '.join(outside)}", code="country_not_presumed")
    targets, skipped = resolve_targets(session, case, request.modality, fmt, countries)
    now = utcnow()
    search = Search(
        case_id=case.id,
        modality=request.modality,
        model=fmt.model,
        dimension=fmt.dimension,
        metric=fmt.metric.value,
        probes=b"".join(to_bytes(p) for p in probes),
        probe_count=len(probes),
        targets=targets,
        skipped=skipped,
        max_candidates=request.max_candidates,
        target_fpir=fpir,
        status=SearchStatus.QUEUED.value if targets else SearchStatus.DONE.value,
        deadline=case.deadline,
        submitted_at=now,
        finished_at=None if targets else now,
        submitted_by=actor.id,
        allow_partial=request.allow_partial_results,
    )
    session.add(search)
    session.flush()
    audit.append(
        session,
        actor,
        "search.submit",
        f"case/{case.id}/search/{search.id}",
        details={"galleries": targets, "skipped": skipped, "probe_count": len(probes), "fpir": fpir},
    )
    return search


def visible_search(session: Session, actor: Principal, search_id: int) -> Search:
    search = session.get(Search, search_id)
    if search is None:
        raise NotFound(f"search {search_id} not found")
    visible_case(session, actor, search.case_id)  # 404 unless the caller's agency owns the case
    return search


def candidates_of(session: Session, search_ids: list[int]) -> list[Candidate]:
    if not search_ids:
        return []
    return list(
        session.scalars(
            select(Candidate).where(Candidate.search_id.in_(search_ids)).order_by(Candidate.search_id, Candidate.rank)
        )
    )


def search_view(session: Session, search: Search) -> dict[str, Any]:
    """A search with its candidates; identity attributes only for confirmed candidates."""
    candidates = candidates_of(session, [search.id])
    confirmed = [c.record_id for c in candidates if c.review_state == ReviewState.CONFIRMED.value and c.record_id]
    attributes = (
        {record.id: record.attributes for record in session.scalars(select(Record).where(Record.id.in_(confirmed)))}
        if confirmed
        else {}
    )
    return {
        "id": search.id,
        "case_id": search.case_id,
        "status": search.status,
        "error": search.error,
        "submitted_at": search.submitted_at,
        "started_at": search.started_at,
        "finished_at": search.finished_at,
        "deadline": search.deadline,
        "target_fpir": search.target_fpir,
        "searched_galleries": search.targets,
        "skipped": search.skipped,
        "candidates": [
            {
                "id": c.id,
                "gallery_id": c.gallery_id,
                "country": c.country,
                "reference_id": c.reference_id,
                "rank": c.rank,
                "score": c.score,
                "band": c.band,
                "review_state": c.review_state,
                "attributes": attributes.get(c.record_id) if c.record_id else None,
            }
            for c in candidates
        ],
        "missing_shards": search.missing_shards or [],
    }


def read_search(session: Session, actor: Principal, search_id: int) -> dict[str, Any]:
    search = visible_search(session, actor, search_id)
    view = search_view(session, search)
    audit.append(
        session,
        actor,
        "search.read",
        f"case/{search.case_id}/search/{search.id}",
        details={"candidates": len(view["candidates"])},
    )
    return view
