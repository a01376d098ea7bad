"""Runs a batch of queued searches: one matcher call per gallery, candidates out, in one write.

A search accepted by this process is handed over in memory (:meth:`SearchExecutor.accept`),
probes included, so that running it reads nothing back; only searches left queued by an
earlier process are read from the database. A search is written twice in its life: accepted
(queued, by the identification use case) and finished (done or failed, here, with its
candidates and its audit event, in one transaction of plain Core statements). Searches whose
deadline has passed are marked ``expired`` and never run late. The probes of all
runnable searches that target a gallery go to the matcher in one call, with probe groups so that
each search gets its own per-record results (batched FAISS search is several times faster per
probe than one call per search). Candidates are the records scoring at least the gallery's
``possible`` threshold at the search's FPIR, merged over galleries, best first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np
from sqlalchemy import CursorResult, bindparam, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.audit import service as audit
from app.audit.actions import Action
from app.db.base import utcnow
from app.db.session import transaction
from app.galleries.models import Gallery, Record
from app.galleries.templates import from_bytes
from app.indexes.registry import IndexRegistry
from app.matching.models import Candidate, ReviewState, Search, SearchStatus
from app.matching.queue import expire
from app.matching.thresholds import ThresholdBook
from app.matching.views import CandidateView
from app.observability.metrics import Metrics
from matcher import Band, MatcherError, SearchResult, ShardUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    search_id: int
    case_id: int
    searched_galleries: list[int]
    probes: np.ndarray
    max_candidates: int
    fpir: float
    deadline: datetime
    submitted_at: datetime
    allow_partial: bool = False

    @classmethod
    def of(cls, search: Search, probes: np.ndarray) -> Job:
        return cls(
            search.id,
            search.case_id,
            list(search.searched_galleries),
            probes,
            search.max_candidates,
            search.target_fpir,
            search.deadline,
            search.submitted_at,
            search.allow_partial,
        )


@dataclass(frozen=True)
class Finished:
    """How a search ended, for the caller waiting on it: what the database now holds of it."""

    status: str
    error: str | None
    started_at: datetime
    finished_at: datetime
    candidates: list[CandidateView] = field(default_factory=list)
    missing_shards: list[dict[str, object]] = field(default_factory=list)


@dataclass
class Outcome:
    """What one batch found: hits per search, the shards missing from a search that accepted
    partial results (per search, per gallery), and the searches that needed a missing shard."""

    hits: dict[int, list[Hit]] = field(default_factory=lambda: defaultdict(list))
    missing: dict[int, dict[int, list[int]]] = field(default_factory=lambda: defaultdict(dict))
    unavailable: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Hit:
    gallery_id: int
    record_id: int
    score: float
    band: Band
    match_threshold: float
    possible_threshold: float


class SearchExecutor:
    def __init__(
        self, sessions: sessionmaker[Session], registry: IndexRegistry, thresholds: ThresholdBook, metrics: Metrics
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.thresholds = thresholds
        self.metrics = metrics
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        """Searches per matcher call, most recent last (bounded)."""
        self._accepted: dict[int, Job] = {}
        self._awaited: dict[int, Finished | None] = {}
        self._lock = threading.Lock()

    def accept(self, job: Job, awaited: bool) -> None:
        """A search just committed as queued, handed over with its probes. ``awaited``: a
        caller will collect how it ended with :meth:`collect`."""
        with self._lock:
            self._accepted[job.search_id] = job
            if awaited:
                self._awaited[job.search_id] = None

    def collect(self, search_id: int) -> Finished | None:
        """How an awaited search ended, once; None while it has not (the caller stops waiting:
        it will read the search later, from the database)."""
        with self._lock:
            return self._awaited.pop(search_id, None)

    def run(self, search_ids: list[int]) -> None:
        started = utcnow()
        jobs = self._runnable(search_ids, started)
        if not jobs:
            return
        try:
            outcome = self.match(jobs)
        except MatcherError as error:  # e.g. shard_unavailable: the code says what to do
            log.warning("search batch failed", extra={"event": {"reason": error.code, "detail": str(error)}})
            self._publish(self._fail(jobs, error.code, started))
            return
        except Exception as error:
            log.exception("search batch failed")
            self._publish(self._fail(jobs, type(error).__name__, started))
            return
        unavailable = [job for job in jobs if job.search_id in outcome.unavailable]
        self._publish(self._fail(unavailable, ShardUnavailableError.code, started))
        self._publish(self._finish([job for job in jobs if job.search_id not in outcome.unavailable], outcome, started))

    def _runnable(self, search_ids: list[int], now: datetime) -> list[Job]:
        """The batch's jobs, those accepted here from memory and the others (left queued by an
        earlier process) from the database; a search past its deadline is expired instead."""
        with self._lock:
            jobs = [self._accepted.pop(i) for i in search_ids if i in self._accepted]
        known = {job.search_id for job in jobs}
        if len(known) < len(search_ids):
            jobs += self._load([i for i in search_ids if i not in known])
        due = [job for job in jobs if job.deadline <= now]
        if due:
            self._expire(due, now)
        for job in jobs:
            self.metrics.queue_wait.observe((now - job.submitted_at).total_seconds())
        return sorted((job for job in jobs if job.deadline > now), key=lambda job: job.deadline)

    def _load(self, search_ids: list[int]) -> list[Job]:
        with self.sessions() as session:
            searches = session.scalars(
                select(Search).where(Search.id.in_(search_ids), Search.status == SearchStatus.QUEUED.value)
            )
            return [Job.of(search, from_bytes([search.probes or b""], search.dimension)) for search in searches]

    def _expire(self, jobs: list[Job], now: datetime) -> None:
        with transaction(self.sessions) as session:
            for search in session.scalars(
                select(Search).where(
                    Search.id.in_([job.search_id for job in jobs]), Search.status == SearchStatus.QUEUED.value
                )
            ):
                expire(session, search, now)
                self.metrics.searches.labels("expired").inc()
        self._publish({job.search_id: Finished(SearchStatus.EXPIRED.value, None, now, now) for job in jobs})

    def _publish(self, finished: dict[int, Finished]) -> None:
        with self._lock:
            for search_id, end in finished.items():
                if search_id in self._awaited:
                    self._awaited[search_id] = end

    def match(self, jobs: list[Job]) -> Outcome:
        """Per search, its hits over every targeted gallery, best first, cut to max_candidates.

        One matcher call per gallery, or two when the batch mixes searches that accept partial
        results with searches that do not (only the former may be answered without a shard)."""
        groups: dict[tuple[int, bool], list[Job]] = defaultdict(list)
        for job in jobs:
            for gallery_id in job.searched_galleries:
                groups[(gallery_id, job.allow_partial)].append(job)
        outcome = Outcome()
        for (gallery_id, allow_partial), members in groups.items():
            try:
                result = self._search(gallery_id, members, allow_partial)
            except ShardUnavailableError:
                outcome.unavailable.update(job.search_id for job in members)
                continue
            for position, job in enumerate(members):
                if result.missing_shards:
                    outcome.missing[job.search_id][gallery_id] = list(result.missing_shards)
                calibrated = self.thresholds.for_identification(gallery_id, job.fpir).thresholds
                for record_id, score in result.candidates(position):
                    band = calibrated.band(score)
                    if band is not None:
                        outcome.hits[job.search_id].append(
                            Hit(gallery_id, record_id, score, band, calibrated.match, calibrated.possible)
                        )
        for job in jobs:
            ranked = sorted(outcome.hits[job.search_id], key=lambda h: (-h.score, h.gallery_id, h.record_id))
            outcome.hits[job.search_id] = ranked[: job.max_candidates]
        return outcome

    def _search(self, gallery_id: int, members: list[Job], allow_partial: bool) -> SearchResult:
        index = self.registry.get(gallery_id)
        probes = np.vstack([job.probes for job in members])
        groups = np.repeat(np.arange(len(members)), [len(job.probes) for job in members])
        started = time.perf_counter()
        k = max(job.max_candidates for job in members)
        result = index.search(probes, k=k, probe_groups=groups, allow_partial=allow_partial)
        self.metrics.matcher_latency.labels(str(gallery_id)).observe(time.perf_counter() - started)
        self.metrics.matcher_batch.observe(len(members))
        self.batch_sizes.append(len(members))
        return result

    def _finish(self, jobs: list[Job], outcome: Outcome, started: datetime) -> dict[int, Finished]:
        """One transaction for the whole batch: each search done (if nothing ended it meanwhile),
        its candidates inserted, its completion audited."""
        if not jobs:
            return {}
        hits = outcome.hits
        record_ids = {hit.record_id for job in jobs for hit in hits[job.search_id]}
        finished: dict[int, Finished] = {}
        with transaction(self.sessions) as session:
            connection = session.connection()  # plain Core below: rows, not entities
            records = (
                {row.id: row for row in connection.execute(_RECORDS, {"ids": list(record_ids)})} if record_ids else {}
            )
            now = utcnow()
            rows: list[dict[str, Any]] = []
            for job in jobs:
                missing = [{"gallery_id": g, "shards": s} for g, s in outcome.missing.get(job.search_id, {}).items()]
                if not self._end(session, job.search_id, SearchStatus.DONE, started, now, missing=missing or None):
                    continue
                kept = [hit for hit in hits[job.search_id] if hit.record_id in records]  # deleted since: not shown
                rows += [
                    {
                        "search_id": job.search_id,
                        "gallery_id": hit.gallery_id,
                        "record_id": hit.record_id,
                        "reference_id": records[hit.record_id].reference_id,
                        "country": records[hit.record_id].country,
                        "rank": rank,
                        "score": hit.score,
                        "band": hit.band.value,
                        "match_threshold": hit.match_threshold,
                        "possible_threshold": hit.possible_threshold,
                        "review_state": ReviewState.PENDING.value,
                    }
                    for rank, hit in enumerate(kept, start=1)
                ]
                finished[job.search_id] = Finished(SearchStatus.DONE.value, None, started, now, missing_shards=missing)
                self.metrics.searches.labels("done").inc()
                self.metrics.deadline_slack.observe(max(0.0, (job.deadline - now).total_seconds()))
                audit.append(
                    session,
                    None,
                    Action.SEARCH_COMPLETE,
                    f"case/{job.case_id}/search/{job.search_id}",
                    details={
                        "candidates": len(kept),
                        "matches": sum(h.band is Band.MATCH for h in kept),
                        **({"missing_shards": missing} if missing else {}),
                    },
                )
            ids = (
                {(row.search_id, row.rank): row.id for row in connection.execute(_INSERT_CANDIDATES, rows)}
                if rows
                else {}
            )
        for row in rows:
            finished[row["search_id"]].candidates.append(candidate_from_row(ids[(row["search_id"], row["rank"])], row))
        return finished

    def _fail(self, jobs: list[Job], reason: str, started: datetime) -> dict[int, Finished]:
        if not jobs:
            return {}
        finished = {}
        with transaction(self.sessions) as session:
            now = utcnow()
            for job in jobs:
                if self._end(session, job.search_id, SearchStatus.FAILED, started, now, error=reason):
                    finished[job.search_id] = Finished(SearchStatus.FAILED.value, reason, started, now)
                    self.metrics.searches.labels("failed").inc()
                    audit.append(
                        session,
                        None,
                        Action.SEARCH_FAIL,
                        f"case/{job.case_id}/search/{job.search_id}",
                        outcome="failed",
                        details={"reason": reason},
                    )
        return finished

    @staticmethod
    def _end(
        session: Session,
        search_id: int,
        status: SearchStatus,
        started: datetime,
        now: datetime,
        *,
        error: str | None = None,
        missing: list[dict[str, object]] | None = None,
    ) -> bool:
        """End a search still queued; False when something else ended it first (expiry)."""
        values = {
            "search_id": search_id,
            "status": status.value,
            "started_at": started,
            "finished_at": now,
            "error": error,
            "missing_shards": missing,
        }
        return bool(cast(CursorResult[Any], session.connection().execute(_END_SEARCH, values)).rowcount)


_RECORDS = (
    select(Record.id, Record.reference_id, Gallery.country)
    .join(Gallery, Gallery.id == Record.gallery_id)
    .where(Record.id.in_(bindparam("ids", expanding=True)))
)
_INSERT_CANDIDATES = insert(Candidate).returning(Candidate.id, Candidate.search_id, Candidate.rank)
_END_SEARCH = (
    update(Search)
    .where(Search.id == bindparam("search_id"), Search.status == SearchStatus.QUEUED.value)
    .values(
        status=bindparam("status"),
        started_at=bindparam("started_at"),
        finished_at=bindparam("finished_at"),
        error=bindparam("error"),
        missing_shards=bindparam("missing_shards"),
    )
)
"""Built once, run per search: ends a search only if it is still queued."""


def candidate_from_row(candidate_id: int, row: dict[str, Any]) -> CandidateView:
    """The view of a candidate just inserted, from the values it was inserted with: nothing is
    read back."""
    fields = {name: value for name, value in row.items() if name != "record_id"}
    return CandidateView(id=candidate_id, attributes=None, note=None, reviewed_at=None, **fields)
