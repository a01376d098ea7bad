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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, exists, insert, select, true
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


INITIAL_ROWS = 1024
"""A group's first buffers, in probe rows; they double when full."""
SCORES_PER_PRODUCT = 1 << 25
"""Scores one matrix product may hold (128 MB): new probes are compared in slices under it."""


@dataclass
class _Group:
    """The stored probes of one agency's linkable cases in one template format, compared with a
    pass's new searches by one matrix product.

    Rows are appended to buffers that double when full, and an erased search's rows are marked
    dead until the next full look compacts them: rebuilding the whole matrix at every change
    copied every stored probe at each pass, twice a second under load."""

    metric: Metric
    rows: np.ndarray
    searches: np.ndarray
    """Per row, its search."""
    cases: np.ndarray
    """Per row, its case."""
    live: np.ndarray
    size: int = 0
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per search, its rows."""

    @classmethod
    def empty(cls, metric: Metric, dimension: int) -> _Group:
        return cls(
            metric,
            np.empty((INITIAL_ROWS, dimension), np.float32),
            np.empty(INITIAL_ROWS, np.int64),
            np.empty(INITIAL_ROWS, np.int64),
            np.zeros(INITIAL_ROWS, bool),
        )

    def add(self, search_id: int, case_id: int, probes: np.ndarray) -> None:
        first, stop = self.size, self.size + len(probes)
        if stop > len(self.rows):
            self._reallocate(max(stop, 2 * len(self.rows)))
        self.rows[first:stop], self.searches[first:stop], self.cases[first:stop] = probes, search_id, case_id
        self.live[first:stop] = True
        self.spans[search_id], self.size = (first, stop), stop

    def erase(self, search_id: int) -> None:
        first, stop = self.spans.pop(search_id)
        self.live[first:stop] = False

    def compact(self) -> None:
        """Drop the dead rows."""
        keep = self.live[: self.size]
        if not keep.all():
            position = np.cumsum(keep) - 1
            self.spans = {s: (int(position[a]), int(position[b - 1]) + 1) for s, (a, b) in self.spans.items()}
            self._reallocate(max(INITIAL_ROWS, 2 * int(keep.sum())), keep)

    def best_other_cases(self, search_ids: list[int], floors: list[float]) -> list[dict[int, tuple[float, int]]]:
        """Per search of ``search_ids`` (all of this group), per other case scoring at least the
        search's floor, its best score against the search's probes and the search holding the
        probes that gave it. The searches are scored in slices of one matrix product each, and
        the floor is applied to whole rows first, so that the Python below sees the few
        candidates only, never every stored probe."""
        found: list[dict[int, tuple[float, int]]] = []
        counts = [self.spans[s][1] - self.spans[s][0] for s in search_ids]
        per_slice = max(1, SCORES_PER_PRODUCT // max(1, self.size) // max(counts))
        stored, live, cases = self.rows[: self.size], self.live[: self.size], self.cases[: self.size]
        for at in range(0, len(search_ids), per_slice):
            chosen = search_ids[at : at + per_slice]
            probes = np.concatenate([self.rows[slice(*self.spans[s])] for s in chosen])
            starts = np.cumsum([0, *counts[at : at + per_slice]])[:-1]
            best = np.maximum.reduceat(score_matrix(self.metric, probes, stored), starts, axis=0)
            for row, search_id, floor in zip(best, chosen, floors[at : at + per_slice], strict=True):
                own_case = cases[self.spans[search_id][0]]
                (kept,) = np.nonzero((row >= floor) & live & (cases != own_case))
                others: dict[int, tuple[float, int]] = {}
                for case_id, score, other in zip(
                    cases[kept].tolist(), row[kept].tolist(), self.searches[kept].tolist(), strict=True
                ):
                    if case_id not in others or score > others[case_id][0]:
                        others[case_id] = (score, other)
                found.append(others)
        return found

    def _reallocate(self, capacity: int, keep: np.ndarray | None = None) -> None:
        """New buffers of ``capacity`` rows holding the current rows, or those ``keep`` marks."""
        for name in ("rows", "searches", "cases", "live"):
            column = getattr(self, name)[: self.size]
            kept = column if keep is None else column[keep]
            grown = np.zeros((capacity, *column.shape[1:]), column.dtype)
            grown[: len(kept)] = kept
            setattr(self, name, grown)
        self.size = self.size if keep is None else int(keep.sum())


FULL_REFRESH_S = 300.0
"""How often the book reads every linkable search, dropping those retention erased, and every
search not yet compared (those left for want of thresholds among them)."""
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


@dataclass(frozen=True)
class FoundLink:
    search_id: int
    case_id: int
    other_case_id: int
    other_search_id: int
    """The other case's search whose probes gave the score."""
    score: float
    band: Band
    country: str
    """The receiving state of both cases."""


class ProbeBook:
    """Every finished identification's stored probes that a link may be found with, decrypted
    once and kept in memory, so that new searches are compared with all of them by one matrix
    product instead of opening every stored probe again (which grows with every search).

    :meth:`look` follows the database: it adds the searches finished since (by this process or
    another) and drops those whose probes retention has erased, so a link is never found with
    erased probes. Between full looks it reads only the ids of the searches finished lately
    (through the index on ``finished_at``) and the rows of those it has not seen: the window
    overlaps the looks before it by ``OVERLAP_S``, and reading its every row at each pass cost
    tens of milliseconds of the interpreter (a thousand searches finished in 30 s at one client),
    which the requests answered meanwhile waited for."""

    def __init__(self) -> None:
        self._groups: dict[GroupKey, _Group] = {}
        self._held: dict[int, _Stored] = {}
        self._seen: set[int] = set()
        """The searches of the last incremental look's window: a look reads only the ids of
        its window, and the rows of those not seen before."""
        self._full_at = -math.inf
        self._looked_at = -math.inf

    def look(self, session: Session, limit: int) -> list[int]:
        """Up to ``limit`` finished searches not yet compared, the book holding every linkable
        one of them after: every ``FULL_REFRESH_S`` (and until a look finds fewer than
        ``limit``) all of them, in between those finished in the last ``OVERLAP_S`` before the
        previous look (commits of several processes land out of order by less than that).
        The pending searches are read before the linkable ones, so that a search finishing
        between the two reads is compared at a later pass, never marked compared unseen."""
        now = time.monotonic()
        full = now - self._full_at >= FULL_REFRESH_S
        since = None
        if not full and self._looked_at > -math.inf:
            since = utcnow() - timedelta(seconds=now - self._looked_at + OVERLAP_S)
        pending = unchecked_searches(session, since, limit)
        if full:
            present = {row.search_id: row for row in _linkable(session, true())}
            self._full_at, self._seen = now, set()
            self.erased(self._held.keys() - present.keys())
            for group in self._groups.values():
                group.compact()
            new = [present[search_id] for search_id in present.keys() - self._held.keys()]
        else:
            window = set(session.scalars(select(Search.id).where(_finished_since(since))))
            unseen = window - self._seen - self._held.keys()
            new = _linkable(session, one_of(session, Search.id, sorted(unseen))) if unseen else []
            self._seen = window
        if len(pending) < limit:
            self._looked_at = now  # otherwise the next look reads this window again, for the rest
        for stored, probes in _opened(session, new):
            group = self._groups.setdefault(stored.key, _Group.empty(Metric(stored.key[4]), stored.key[3]))
            group.add(stored.search_id, stored.case_id, probes)
            self._held[stored.search_id] = stored
        return pending

    def erased(self, search_ids: Iterable[int]) -> None:
        """Forget searches found erased before the next full look."""
        for search_id in search_ids:
            stored = self._held.pop(search_id, None)
            if stored is not None:
                self._groups[stored.key].erase(search_id)

    def compare(self, search_ids: list[int], thresholds_of: ThresholdsOf) -> tuple[list[int], list[FoundLink]]:
        """Compare ``search_ids`` with the other cases' stored probes: the searches settled
        (compared, or not linkable: consent, erased, multi-modal or unopenable) and the links
        found. A search whose gallery's thresholds are not known here yet is not settled: a
        later full look takes it again."""
        settled = [search_id for search_id in search_ids if search_id not in self._held]
        by_group: dict[GroupKey, list[tuple[_Stored, Thresholds]]] = {}
        for search_id in search_ids:
            stored = self._held.get(search_id)
            thresholds = None if stored is None or stored.gallery_id is None else thresholds_of(stored.gallery_id)
            if stored is not None and thresholds is not None:
                by_group.setdefault(stored.key, []).append((stored, thresholds))
        found = []
        for key, members in by_group.items():
            floors = [thresholds.possible for _, thresholds in members]
            best = self._groups[key].best_other_cases([stored.search_id for stored, _ in members], floors)
            for (stored, thresholds), others in zip(members, best, strict=True):
                settled.append(stored.search_id)
                for other, (score, other_search) in sorted(others.items()):
                    band = thresholds.band(score)
                    if band is not None:
                        link = FoundLink(stored.search_id, stored.case_id, other, other_search, score, band, key[0])
                        found.append(link)
        return settled, found


def _linkable(session: Session, among: ColumnElement[bool]) -> list[Any]:
    """Finished single-modality identifications with stored probes, of cases whose legal basis
    allows linking, among the searches ``among`` selects: ids and what groups them, no probes."""
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
                among,
            )
        )
    )


def _finished_since(since: datetime | None) -> ColumnElement[bool]:
    """Searches finished since ``since`` (all of them for None): the look's window."""
    return Search.finished_at >= since if since is not None else true()


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


def unchecked_searches(session: Session, finished_since: datetime | None, limit: int) -> list[int]:
    """Finished identifications whose probes were not yet compared with the other cases' (those
    finished since ``finished_since`` if given)."""
    return list(
        session.scalars(
            select(Search.id)
            .where(
                Search.status == SearchStatus.DONE.value,
                _finished_since(finished_since),
                ~exists().where(CaseLinkCheck.search_id == Search.id),
            )
            .order_by(Search.id)
            .limit(limit)
        )
    )


def link_pending(
    sessions: Sessions, read_sessions: Sessions, book: ProbeBook, thresholds_of: ThresholdsOf, limit: int = 500
) -> tuple[int, bool]:
    """Compare up to ``limit`` finished searches not yet compared with the other cases' probes,
    and store the links and that they were compared, in one short transaction: the looking and
    comparing (reads, decryption, matrix products) hold no write lock. They read through
    ``read_sessions``: on SQLite a session of the writing engine takes the writers' turn at its
    first statement, and the look held it 10 ms a pass while identifications waited for it.
    Returns how many links were made, and whether more searches may be waiting."""
    with read_sessions() as session:
        pending = book.look(session, limit)
    if not pending:
        return 0, False
    settled, found = book.compare(pending, thresholds_of)
    made = 0
    with transaction(sessions) as session:
        if settled:
            session.execute(
                upsert_statement(session, CaseLinkCheck)
                .values([{"search_id": search_id, "checked_at": utcnow()} for search_id in settled])
                .on_conflict_do_nothing(index_elements=[CaseLinkCheck.search_id])
            )
        erased = _erased(session, [link.other_search_id for link in found])
        book.erased(erased)
        known = _linked_pairs(session, [link.case_id for link in found])
        for link in found:
            pair = (link.case_id, link.other_case_id)
            if link.other_search_id not in erased and pair not in known:  # erased since the last full look
                _link(session, link)
                known.update({pair, (link.other_case_id, link.case_id)})
                made += 1
    return made, len(pending) == limit


def _erased(session: Session, search_ids: list[int]) -> set[int]:
    """Those of ``search_ids`` whose probes are no longer stored."""
    if not search_ids:
        return set()
    return set(
        session.scalars(select(Search.id).where(one_of(session, Search.id, search_ids), Search.probes.is_(None)))
    )


def _linked_pairs(session: Session, case_ids: list[int]) -> set[tuple[int, int]]:
    """The links already stored from ``case_ids``, as (case, linked case): a later search of
    either case finds a link again."""
    if not case_ids:
        return set()
    query = select(CaseLink.case_id, CaseLink.linked_case_id)
    rows = session.execute(query.where(one_of(session, CaseLink.case_id, sorted(set(case_ids)))))
    return {(row.case_id, row.linked_case_id) for row in rows}


def _link(session: Session, link: FoundLink) -> None:
    """Both directions of the link, audited once, touching the receiving state only."""
    values: dict[str, Any] = {"search_id": link.search_id, "score": link.score, "band": link.band.value}
    values["found_at"] = utcnow()
    session.execute(
        insert(CaseLink),
        [
            {"case_id": link.case_id, "linked_case_id": link.other_case_id, **values},
            {"case_id": link.other_case_id, "linked_case_id": link.case_id, **values},
        ],
    )
    audit.append(
        session,
        None,
        Action.CASE_LINK,
        f"case/{link.case_id}",
        [link.country],
        details={"linked_case": link.other_case_id, "search": link.search_id, "band": link.band.value},
    )


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
