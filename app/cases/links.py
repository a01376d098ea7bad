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

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import exists, insert, select, true
from sqlalchemy.orm import Session, aliased

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.models import Case, CaseLink, CaseLinkCheck, LegalBasis
from app.cases.service import visible_case
from app.db.base import utcnow
from app.db.bulk import one_of
from app.db.session import Sessions, transaction, upsert_statement
from app.encryption.exceptions import SealedValueRefused
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

log = logging.getLogger(__name__)

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


@dataclass
class _Group:
    """The stored probes of one agency's linkable cases in one template format, searched by one
    GEMM per new search: rows, and per row its search and case."""

    metric: Metric
    probes: dict[int, np.ndarray]
    """Per search, its probe rows."""
    cases: dict[int, int]
    """Per search, its case."""
    _matrix: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def matrix(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All rows at once, with each row's search and case; rebuilt after a change only."""
        if self._matrix is None:
            searches = sorted(self.probes)
            counts = [len(self.probes[s]) for s in searches]
            self._matrix = (
                np.concatenate([self.probes[s] for s in searches]).astype(np.float32, copy=False),
                np.repeat(np.array(searches, np.int64), counts),
                np.repeat(np.array([self.cases[s] for s in searches], np.int64), counts),
            )
        return self._matrix

    def changed(self) -> None:
        self._matrix = None


FULL_REFRESH_S = 300.0
"""How often the book reads every linkable search, dropping those retention erased."""
OVERLAP_S = 30.0
"""How far back before its previous look an incremental look reads finished searches."""

GroupKey = tuple[str, str, str, int, str]
"""(receiving state, agency, model, dimension, metric): probes comparable and linkable together."""


@dataclass(frozen=True)
class _Stored:
    search_id: int
    case_id: int
    gallery_id: int | None
    key: GroupKey


class ProbeBook:
    """Every finished identification's stored probes that a link may be found with, decrypted
    once and kept in memory, so that a new search is compared with all of them by one matrix
    product instead of opening every stored probe again (which grows with every search).

    :meth:`refresh` follows the database: it adds the searches finished since (by this process or
    another) and drops those whose probes retention has erased, so a link is never found with
    erased probes."""

    def __init__(self) -> None:
        self._groups: dict[GroupKey, _Group] = {}
        self._held: dict[int, _Stored] = {}
        self._full_at = -math.inf
        self._looked_at = -math.inf

    def __contains__(self, search_id: int) -> bool:
        return search_id in self._held

    def refresh(self, session: Session) -> None:
        """Follow the database: every ``FULL_REFRESH_S`` all linkable searches (dropping those
        erased since), in between only those finished in the last ``OVERLAP_S`` before the
        previous look (commits of several processes land out of order by less than that)."""
        now = time.monotonic()
        full = now - self._full_at >= FULL_REFRESH_S
        since = None if full else utcnow() - timedelta(seconds=now - self._looked_at + OVERLAP_S)
        present = {row.search_id: row for row in _linkable(session, since)}
        self._looked_at = now
        if full:
            self._full_at = now
            self.erased(self._held.keys() - present.keys())
        new = [present[search_id] for search_id in present.keys() - self._held.keys()]
        for stored, probes in _opened(session, new):
            group = self._groups.setdefault(stored.key, _Group(Metric(stored.key[4]), {}, {}))
            group.probes[stored.search_id], group.cases[stored.search_id] = probes, stored.case_id
            group.changed()
            self._held[stored.search_id] = stored

    def erased(self, search_ids: Iterable[int]) -> None:
        """Forget searches found erased before the next full look."""
        for search_id in search_ids:
            stored = self._held.pop(search_id, None)
            if stored is not None:
                group = self._groups[stored.key]
                del group.probes[search_id], group.cases[search_id]
                group.changed()

    def stored(self, search_id: int) -> _Stored:
        return self._held[search_id]

    def best_other_cases(self, search_id: int, floor: float) -> dict[int, tuple[float, int]]:
        """Per other case of the search's group scoring at least ``floor``, its best score
        against the search's probes and the search holding the probes that gave it. The floor
        is applied to the whole row first, so that the Python below sees the few candidates
        only, never every stored probe (a loop over all of them took a core under load)."""
        stored = self._held[search_id]
        group = self._groups[stored.key]
        rows, searches, cases = group.matrix()
        best = score_matrix(group.metric, group.probes[search_id], rows).max(axis=0)
        (kept,) = np.nonzero((best >= floor) & (cases != stored.case_id))
        found: dict[int, tuple[float, int]] = {}
        for case_id, score, other in zip(
            cases[kept].tolist(), best[kept].tolist(), searches[kept].tolist(), strict=True
        ):
            if case_id not in found or score > found[case_id][0]:
                found[case_id] = (score, other)
        return found


def _linkable(session: Session, finished_since: datetime | None) -> list[Any]:
    """Finished single-modality identifications with stored probes, of cases whose legal basis
    allows linking (those finished since ``finished_since`` if given): ids and what groups them,
    no probes."""
    recent = Search.finished_at >= finished_since if finished_since is not None else true()
    return list(
        session.execute(
            select(
                Search.id.label("search_id"),
                Search.case_id,
                Search.searched_galleries,
                Case.agency_country,
                Case.agency,
                Search.model,
                Search.dimension,
                Search.metric,
            )
            .join(Case, Case.id == Search.case_id)
            .where(
                Search.status == SearchStatus.DONE.value,
                Search.probes.is_not(None),
                Search.dimension > 0,  # a multi-modal search's probes are of several formats
                Case.legal_basis.in_(LINKABLE_BASES),
                recent,
            )
        )
    )


def _opened(session: Session, rows: list[Any]) -> list[tuple[_Stored, np.ndarray]]:
    """The stored probes of ``rows``, opened; a search whose probes do not open (altered or
    moved) is left out, and said so once."""
    if not rows:
        return []
    query = select(Search.id, Search.probes).where(one_of(session, Search.id, [r.search_id for r in rows]))
    sealed = {row.id: row.probes for row in session.execute(query)}
    opened = []
    for row in rows:
        stored = _Stored(
            row.search_id,
            row.case_id,
            row.searched_galleries[0] if row.searched_galleries else None,
            (row.agency_country, row.agency, row.model, row.dimension, row.metric),
        )
        try:
            probes = from_bytes([open_probes(session, row.search_id, sealed[row.search_id])], row.dimension)
        except SealedValueRefused:
            log.error("probes do not open: search not linked", extra={"event": {"search_id": row.search_id}})
            continue
        opened.append((stored, probes))
    return opened


def unchecked_searches(session: Session, limit: int = 500) -> list[int]:
    """Finished identifications whose probes were not yet compared with the other cases'."""
    return list(
        session.scalars(
            select(Search.id)
            .where(Search.status == SearchStatus.DONE.value, ~exists().where(CaseLinkCheck.search_id == Search.id))
            .order_by(Search.id)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class FoundLink:
    search_id: int
    case_id: int
    other_case_id: int
    other_search_id: int
    """The other case's search whose probes gave the score."""
    score: float
    band: Band


def link_pending(
    sessions: Sessions, book: ProbeBook, thresholds_of: ThresholdsOf, limit: int = 500
) -> tuple[int, bool]:
    """Compare up to ``limit`` finished searches not yet compared with the other cases' probes,
    and store the links and that they were compared, in one short transaction: the comparing
    (reads, decryption, matrix products) holds no write lock. Returns how many links were made,
    and whether more searches may be waiting."""
    with sessions() as session:
        book.refresh(session)
        pending = unchecked_searches(session, limit)
    if not pending:
        return 0, False
    found: list[FoundLink] = []
    for search_id in pending:
        if search_id not in book:
            continue  # not linkable: consent, erased, multi-modal or unopenable; only marked
        stored = book.stored(search_id)
        thresholds = thresholds_of(stored.gallery_id) if stored.gallery_id is not None else None
        if thresholds is None:
            continue
        for other, (score, other_search) in sorted(book.best_other_cases(search_id, thresholds.possible).items()):
            band = thresholds.band(score)
            if band is not None:
                found.append(FoundLink(search_id, stored.case_id, other, other_search, score, band))
    made = 0
    with transaction(sessions) as session:
        session.execute(
            upsert_statement(session, CaseLinkCheck)
            .values([{"search_id": search_id, "checked_at": utcnow()} for search_id in pending])
            .on_conflict_do_nothing(index_elements=[CaseLinkCheck.search_id])
        )
        erased = _erased(session, [link.other_search_id for link in found])
        book.erased(erased)
        for link in found:
            if link.other_search_id not in erased:  # since the book's last full look
                made += _link(session, link)
    return made, len(pending) == limit


def _erased(session: Session, search_ids: list[int]) -> set[int]:
    """Those of ``search_ids`` whose probes are no longer stored."""
    if not search_ids:
        return set()
    return set(
        session.scalars(select(Search.id).where(one_of(session, Search.id, search_ids), Search.probes.is_(None)))
    )


def _link(session: Session, link: FoundLink) -> bool:
    """Both directions of the link, unless it exists already (a later search of either case
    found it first); audited once, touching the receiving state only."""
    case_id, other_id = link.case_id, link.other_case_id
    known = session.scalar(select(CaseLink.id).where(CaseLink.case_id == case_id, CaseLink.linked_case_id == other_id))
    if known is not None:
        return False
    values: dict[str, Any] = {"search_id": link.search_id, "score": link.score, "band": link.band.value}
    values["found_at"] = utcnow()
    session.execute(
        insert(CaseLink),
        [
            {"case_id": case_id, "linked_case_id": other_id, **values},
            {"case_id": other_id, "linked_case_id": case_id, **values},
        ],
    )
    country = session.scalar(select(Case.agency_country).where(Case.id == case_id))
    audit.append(
        session,
        None,
        Action.CASE_LINK,
        f"case/{case_id}",
        [country],
        details={"linked_case": other_id, "search": link.search_id, "band": link.band.value},
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
