"""Runs a batch of queued searches: database in, one matcher call per gallery, candidates out.

Searches whose deadline has passed are marked ``expired`` and never run late. The probes of all
runnable searches that target a gallery go to the matcher in one call, with probe groups so that
each search gets its own per-record results (batched FAISS search is several times faster per
probe than one call per search). Candidates are the records scoring at least the gallery's
``possible`` threshold at the search's FPIR, merged over galleries, best first.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.audit import service as audit
from app.audit.actions import Action
from app.db.base import utcnow
from app.db.session import transaction
from app.galleries.models import Gallery, Record
from app.galleries.templates import from_bytes
from app.indexes.registry import IndexRegistry
from app.matching.models import Candidate, Search, SearchStatus
from app.matching.queue import expire
from app.matching.thresholds import ThresholdBook
from app.observability.metrics import Metrics
from matcher import Band, MatcherError, SearchResult, ShardUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    search_id: int
    searched_galleries: list[int]
    probes: np.ndarray
    max_candidates: int
    fpir: float
    allow_partial: bool = False


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

    def run(self, search_ids: list[int]) -> None:
        jobs = self._start(search_ids)
        if not jobs:
            return
        try:
            outcome = self.match(jobs)
        except MatcherError as error:  # e.g. shard_unavailable: the code says what to do
            log.warning("search batch failed", extra={"event": {"reason": error.code, "detail": str(error)}})
            self._fail(jobs, error.code)
            return
        except Exception as error:
            log.exception("search batch failed")
            self._fail(jobs, type(error).__name__)
            return
        self._fail([job for job in jobs if job.search_id in outcome.unavailable], ShardUnavailableError.code)
        self._finish([job for job in jobs if job.search_id not in outcome.unavailable], outcome)

    def _start(self, search_ids: list[int]) -> list[Job]:
        now = utcnow()
        jobs = []
        with transaction(self.sessions) as session:
            searches = session.scalars(
                select(Search)
                .where(Search.id.in_(search_ids), Search.status == SearchStatus.QUEUED.value)
                .order_by(Search.deadline)
                .with_for_update()
            )
            for search in searches:
                if search.deadline <= now:
                    expire(session, search, now)
                    self.metrics.searches.labels("expired").inc()
                    continue
                search.status, search.started_at = SearchStatus.RUNNING.value, now
                self.metrics.queue_wait.observe((now - search.submitted_at).total_seconds())
                jobs.append(
                    Job(
                        search.id,
                        list(search.searched_galleries),
                        from_bytes([search.probes or b""], search.dimension),
                        search.max_candidates,
                        search.target_fpir,
                        search.allow_partial,
                    )
                )
        return jobs

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

    def _finish(self, jobs: list[Job], outcome: Outcome) -> None:
        if not jobs:
            return
        hits = outcome.hits
        record_ids = {hit.record_id for job in jobs for hit in hits[job.search_id]}
        with transaction(self.sessions) as session:
            records = (
                {
                    row.id: row
                    for row in session.execute(
                        select(Record.id, Record.reference_id, Gallery.country)
                        .join(Gallery, Gallery.id == Record.gallery_id)
                        .where(Record.id.in_(record_ids))
                    )
                }
                if record_ids
                else {}
            )
            now = utcnow()
            for job in jobs:
                search = session.get(Search, job.search_id)
                if search is None or search.status != SearchStatus.RUNNING.value:
                    continue
                rank = 0
                for hit in hits[job.search_id]:
                    row = records.get(hit.record_id)
                    if row is None:  # deleted after it was matched: it must not be shown
                        continue
                    rank += 1
                    session.add(
                        Candidate(
                            search_id=job.search_id,
                            gallery_id=hit.gallery_id,
                            record_id=hit.record_id,
                            reference_id=row.reference_id,
                            country=row.country,
                            rank=rank,
                            score=hit.score,
                            band=hit.band.value,
                            match_threshold=hit.match_threshold,
                            possible_threshold=hit.possible_threshold,
                        )
                    )
                search.status, search.finished_at = SearchStatus.DONE.value, now
                missing = outcome.missing.get(job.search_id)
                if missing:
                    search.missing_shards = [{"gallery_id": g, "shards": shards} for g, shards in missing.items()]
                self.metrics.searches.labels("done").inc()
                self.metrics.deadline_slack.observe(max(0.0, (search.deadline - now).total_seconds()))
                audit.append(
                    session,
                    None,
                    Action.SEARCH_COMPLETE,
                    f"case/{search.case_id}/search/{search.id}",
                    details={
                        "candidates": rank,
                        "matches": sum(h.band is Band.MATCH for h in hits[job.search_id]),
                        **({"missing_shards": search.missing_shards} if missing else {}),
                    },
                )

    def _fail(self, jobs: list[Job], reason: str) -> None:
        if not jobs:
            return
        with transaction(self.sessions) as session:
            for job in jobs:
                search = session.get(Search, job.search_id)
                if search is not None and search.status == SearchStatus.RUNNING.value:
                    search.status, search.finished_at, search.error = SearchStatus.FAILED.value, utcnow(), reason
                    self.metrics.searches.labels("failed").inc()
                    audit.append(
                        session,
                        None,
                        Action.SEARCH_FAIL,
                        f"case/{search.case_id}/search/{search.id}",
                        outcome="failed",
                        details={"reason": reason},
                    )
