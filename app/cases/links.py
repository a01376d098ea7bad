"""Links between cases: the same person detained again under another name.

After an identification has ended (never on its way: the linker, linker.py, takes finished
searches from the database), its probes are compared with the stored probes of the other cases
that may be linked to it, and each case scoring at least the ``possible`` threshold gets a link
``{case_id, score, band}`` in both directions, audited.

**Which cases may be linked** (the rule README's "Links between cases" states):

- the same receiving state, and cases that one agency may see both of: today a case is seen by
  its own agency only, so the two cases are the same agency's;
- both cases' legal basis allows their probes to be compared with other cases': a readmission
  agreement, a legal obligation or a court order does; consent does not (it was given for the
  identification with the country of origin, and purpose limitation forbids re-using the data
  for another purpose without a basis of its own);
- the other case's probes are still stored (retention has not erased them: app/matching/retention.py)
  and of the same template format (model, dimension, metric).

Scores are read at the thresholds of verification (1:1) of a gallery of the same format that
the search targeted, at ``READMIT_LINK_FMR`` (``match``) and ten times it (``possible``).
Probes are sealed at rest and opened here in memory only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import exists, insert, select
from sqlalchemy.orm import Session, aliased

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.models import Case, CaseLink, CaseLinkCheck, LegalBasis
from app.cases.service import visible_case
from app.db.base import utcnow
from app.db.session import Sessions, transaction
from app.galleries.templates import from_bytes
from app.matching.models import Search, SearchStatus
from app.matching.probes import open_probes
from app.principals.models import Principal
from matcher import Band, Metric, Thresholds
from matcher.dedup import score_matrix

LINKABLE_BASES = (
    LegalBasis.READMISSION_AGREEMENT.value,
    LegalBasis.LEGAL_OBLIGATION.value,
    LegalBasis.COURT_ORDER.value,
)
"""Legal bases under which a case's probes may be compared with other cases' (not consent)."""

ThresholdsOf = Callable[[int], Thresholds | None]
"""gallery id -> its verification thresholds at the link FMR (None: its index is not loaded)."""


@dataclass(frozen=True)
class LinkView:
    case_id: int
    external_ref: str
    score: float
    band: str
    search_id: int
    found_at: datetime


def unchecked_searches(sessions: Sessions, limit: int = 50) -> list[int]:
    """Finished identifications whose probes were not yet compared with the other cases'."""
    with sessions() as session:
        return list(
            session.scalars(
                select(Search.id)
                .where(
                    Search.status == SearchStatus.DONE.value,
                    Search.probes.is_not(None),
                    ~exists().where(CaseLinkCheck.search_id == Search.id),
                )
                .order_by(Search.id)
                .limit(limit)
            )
        )


def skip_search(sessions: Sessions, search_id: int) -> None:
    """Mark a search compared without comparing it (its probes do not open: altered or moved),
    so that the linker does not try it again and again."""
    with transaction(sessions) as session:
        session.execute(insert(CaseLinkCheck), [{"search_id": search_id, "checked_at": utcnow()}])


def link_search(sessions: Sessions, search_id: int, thresholds_of: ThresholdsOf) -> list[int]:
    """Compare a finished search's probes with the linkable cases' and store the links; returns
    the linked case ids. Marked checked in the same transaction, so that it is done once."""
    with transaction(sessions) as session:
        search = session.get_one(Search, search_id)
        case = session.get_one(Case, search.case_id)
        session.execute(insert(CaseLinkCheck), [{"search_id": search_id, "checked_at": utcnow()}])
        thresholds = thresholds_of(search.searched_galleries[0]) if search.searched_galleries else None
        if thresholds is None or case.legal_basis not in LINKABLE_BASES or search.probes is None:
            return []
        probes = from_bytes([open_probes(session, search.id, search.probes)], search.dimension)
        best = _best_scores(session, search, case, probes)
        linked = []
        for other_id, (score, _) in sorted(best.items()):
            band = thresholds.band(score)
            if band is not None and _link(session, case, other_id, search_id, score, band):
                linked.append(other_id)
        return linked


def _best_scores(session: Session, search: Search, case: Case, probes: np.ndarray) -> dict[int, tuple[float, int]]:
    """Per linkable other case, its best score against ``probes`` and the search holding it."""
    other = aliased(Case)
    rows = session.execute(
        select(Search.id, Search.case_id, Search.probes)
        .join(other, other.id == Search.case_id)
        .where(
            other.id != case.id,
            other.agency == case.agency,
            other.agency_country == case.agency_country,
            other.legal_basis.in_(LINKABLE_BASES),
            Search.probes.is_not(None),
            Search.model == search.model,
            Search.dimension == search.dimension,
            Search.metric == search.metric,
        )
    )
    best: dict[int, tuple[float, int]] = {}
    metric = Metric(search.metric)
    for other_search, other_case, stored in rows:
        theirs = from_bytes([open_probes(session, other_search, stored)], search.dimension)
        if theirs.size == 0:
            continue
        score = float(score_matrix(metric, probes, theirs).max())
        if other_case not in best or score > best[other_case][0]:
            best[other_case] = (score, other_search)
    return best


def _link(session: Session, case: Case, other_id: int, search_id: int, score: float, band: Band) -> bool:
    """Both directions of the link, unless it exists already (a later search of either case
    found it first); audited once, touching the receiving state only."""
    known = session.scalar(select(CaseLink.id).where(CaseLink.case_id == case.id, CaseLink.linked_case_id == other_id))
    if known is not None:
        return False
    now = utcnow()
    values: dict[str, Any] = {"search_id": search_id, "score": score, "band": band.value, "found_at": now}
    session.execute(
        insert(CaseLink),
        [
            {"case_id": case.id, "linked_case_id": other_id, **values},
            {"case_id": other_id, "linked_case_id": case.id, **values},
        ],
    )
    audit.append(
        session,
        None,
        Action.CASE_LINK,
        f"case/{case.id}",
        [case.agency_country],
        details={"linked_case": other_id, "search": search_id, "band": band.value},
    )
    return True


def read_links(sessions: Sessions, actor: Principal, case_id: int) -> list[LinkView]:
    """The links of a case of the actor's agency (404 otherwise) to cases the actor may also
    see, best first; the read is audited."""
    with transaction(sessions) as session:
        case = visible_case(session, actor, case_id)
        other = aliased(Case)
        rows = session.execute(
            select(CaseLink, other.external_ref)
            .join(other, other.id == CaseLink.linked_case_id)
            .where(CaseLink.case_id == case_id, other.agency == actor.agency)
            .order_by(CaseLink.score.desc(), CaseLink.linked_case_id)
        ).all()
        links = [
            LinkView(link.linked_case_id, external_ref, link.score, link.band, link.search_id, link.found_at)
            for link, external_ref in rows
        ]
        audit.append(
            session,
            actor,
            Action.CASE_LINKS_READ,
            f"case/{case_id}",
            [case.agency_country],
            details={"links": len(links)},
        )
    return links
