"""Deduplication jobs: submitted through the API, run by the service's worker (worker.py), read
back with their pairs and clusters.

A job and its pairs live in the database. The worker holds a lease on the job it runs, renewed at
every block's checkpoint, so that one process runs it at a time and another (or the same one,
restarted) takes it over from its last checkpoint when the lease lapses; a process that stops
gracefully gives its lease back at once. Only the gallery's country (its registry) and the admin
see a job: anyone else gets 404, as for the gallery itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.db.base import utcnow
from app.db.session import Sessions, transaction
from app.deduplication.exceptions import InvalidDeduplication, UnknownDeduplication
from app.deduplication.models import PENDING, DeduplicationJob, DeduplicationPair, JobStatus
from app.deduplication.workflow import Calibrated, PairRow, Resumed, clusters_of
from app.galleries.access import visible_gallery
from app.galleries.exceptions import UnknownGallery
from app.galleries.models import Gallery
from app.matching.rates import rate_from_request
from app.principals.models import Principal
from matcher import CalibrationError

DEFAULT_MAX_PAIRS = 100_000


@dataclass(frozen=True)
class JobView:
    id: int
    gallery_id: int
    status: str
    target_fmr: float | None
    max_pairs: int
    method: str | None
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    blocks_done: int
    blocks_total: int | None
    threshold: float | None
    possible_threshold: float | None
    expected_false_pairs: float | None
    pairs_found: int
    error: str | None
    pairs: list[PairRow] = field(default_factory=list)
    clusters: list[list[str]] = field(default_factory=list)


def start_deduplication(
    sessions: Sessions, actor: Principal, gallery_id: int, target_fmr: float | None, max_pairs: int | None
) -> JobView:
    """Queue a job for the gallery (admin, or a registry officer of its country; 404 for anyone
    else). ``target_fmr`` by default: one false pair expected in the whole gallery, read when the
    job starts."""
    if target_fmr is not None:
        try:
            target_fmr = rate_from_request(target_fmr)
        except CalibrationError as error:
            raise InvalidDeduplication(str(error)) from error
    with transaction(sessions) as session:
        gallery = visible_gallery(session, actor, gallery_id)
        job = DeduplicationJob(
            gallery_id=gallery.id,
            requested_by=actor.id,
            status=JobStatus.QUEUED.value,
            target_fmr=target_fmr,
            max_pairs=max_pairs or DEFAULT_MAX_PAIRS,
            blocks_done=0,
            pairs_found=0,
            submitted_at=utcnow(),
        )
        session.add(job)
        session.flush()
        audit.append(
            session,
            actor,
            Action.DEDUPLICATION_START,
            job_resource(job),
            [gallery.country],
            details={"target_fmr": target_fmr, "max_pairs": job.max_pairs},
        )
        return _view(job)


def read_deduplication(sessions: Sessions, read_sessions: Sessions, actor: Principal, job_id: int) -> JobView:
    """The job with its progress, and once done its pairs (best first) and clusters; the read is
    audited. Up to ``max_pairs`` pairs are read and clustered through ``read_sessions``, apart
    from SQLite's writers' turn; the audit event is written after, in a short transaction."""
    with read_sessions() as session:
        job = session.get(DeduplicationJob, job_id)
        try:
            gallery = visible_gallery(session, actor, job.gallery_id if job is not None else 0)
        except UnknownGallery:
            raise UnknownDeduplication(f"deduplication job {job_id} not found") from None
        job = cast(DeduplicationJob, job)
        pairs: list[PairRow] = []
        if job.status == JobStatus.DONE.value:
            rows = session.execute(
                select(DeduplicationPair)
                .where(DeduplicationPair.job_id == job_id)
                .order_by(DeduplicationPair.score.desc(), DeduplicationPair.reference_id_a)
            ).scalars()
            pairs = [PairRow(p.reference_id_a, p.reference_id_b, p.score, p.band) for p in rows]
        clusters = clusters_of([(p.reference_id_a, p.reference_id_b) for p in pairs])
        view, resource, country = _view(job, pairs, clusters), job_resource(job), gallery.country
    with transaction(sessions) as session:
        audit.append(session, actor, Action.DEDUPLICATION_READ, resource, [country], details={"pairs": len(pairs)})
    return view


def audit_offline_run(sessions: Sessions, gallery_id: int, action: Action, details: dict[str, Any]) -> None:
    """An offline run (``readmit dedup``, by the operator) is audited as a job is: start, finish."""
    with transaction(sessions) as session:
        gallery = session.get(Gallery, gallery_id)
        if gallery is None:
            raise UnknownGallery(f"gallery {gallery_id} not found")
        audit.append(
            session, None, action, f"gallery/{gallery_id}/deduplication/offline", [gallery.country], details=details
        )


def job_resource(job: DeduplicationJob) -> str:
    return f"gallery/{job.gallery_id}/deduplication/{job.id}"


def _view(
    job: DeduplicationJob, pairs: list[PairRow] | None = None, clusters: list[list[str]] | None = None
) -> JobView:
    return JobView(
        id=job.id,
        gallery_id=job.gallery_id,
        status=job.status,
        target_fmr=job.target_fmr,
        max_pairs=job.max_pairs,
        method=job.method,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        blocks_done=job.blocks_done,
        blocks_total=job.blocks_total,
        threshold=job.match_threshold,
        possible_threshold=job.possible_threshold,
        expected_false_pairs=job.expected_false_pairs,
        pairs_found=job.pairs_found,
        error=job.error,
        pairs=pairs or [],
        clusters=clusters or [],
    )


# -- the worker's side ---------------------------------------------------------------------------


class LeaseLost(Exception):
    """Another process took the job over (this one's lease lapsed): it stops here."""


def claim_next(sessions: Sessions, owner: str, lease_s: float) -> int | None:
    """Take the oldest pending job no live process holds; its id, or None."""
    now = utcnow()
    with transaction(sessions) as session:
        candidates = session.scalars(
            select(DeduplicationJob.id)
            .where(
                DeduplicationJob.status.in_(PENDING),
                or_(DeduplicationJob.lease_owner.is_(None), DeduplicationJob.lease_expires < now),
            )
            .order_by(DeduplicationJob.id)
            .limit(5)
        ).all()
        for job_id in candidates:
            claimed = session.execute(
                update(DeduplicationJob)
                .where(
                    DeduplicationJob.id == job_id,
                    DeduplicationJob.status.in_(PENDING),
                    or_(DeduplicationJob.lease_owner.is_(None), DeduplicationJob.lease_expires < now),
                )
                .values(
                    status=JobStatus.RUNNING.value,
                    lease_owner=owner,
                    lease_expires=now + timedelta(seconds=lease_s),
                    started_at=func.coalesce(DeduplicationJob.started_at, now),
                )
            )
            if cast(CursorResult[Any], claimed).rowcount:
                return int(job_id)
    return None


def release(sessions: Sessions, owner: str) -> None:
    """Give back the leases of ``owner``'s jobs (a graceful stop): another start takes them at
    once, from their last checkpoint."""
    with transaction(sessions) as session:
        session.execute(
            update(DeduplicationJob)
            .where(DeduplicationJob.lease_owner == owner)
            .values(lease_owner=None, lease_expires=None)
        )


@dataclass(frozen=True)
class JobOrder:
    gallery_id: int
    target_fmr: float | None


def job_order(sessions: Sessions, job_id: int) -> JobOrder:
    with sessions() as session:
        job = session.get_one(DeduplicationJob, job_id)
        return JobOrder(job.gallery_id, job.target_fmr)


class JobLedger:
    """A job's progress and pairs in the database (:class:`app.deduplication.workflow.Ledger`):
    each block's pairs and checkpoint in one transaction, with the lease renewed; only the best
    ``max_pairs`` pairs are kept."""

    def __init__(self, sessions: Sessions, job_id: int, owner: str, lease_s: float) -> None:
        self.sessions, self.job_id, self.owner, self.lease_s = sessions, job_id, owner, lease_s

    def resume(self, change_seq: int) -> Resumed | None:
        with transaction(self.sessions) as session:
            job = session.get_one(DeduplicationJob, self.job_id)
            if job.change_seq == change_seq and job.blocks_total is not None:
                calibrated = Calibrated(
                    change_seq,
                    cast(str, job.method),
                    job.blocks_total,
                    cast(float, job.target_fmr),
                    cast(float, job.match_threshold),
                    cast(float, job.possible_threshold),
                    cast(float, job.expected_false_pairs),
                    job.tail or {},
                )
                return Resumed(calibrated, job.blocks_done)
            session.execute(delete(DeduplicationPair).where(DeduplicationPair.job_id == self.job_id))
            return None

    def begin(self, calibrated: Calibrated) -> None:
        with transaction(self.sessions) as session:
            self._renew(
                session,
                change_seq=calibrated.change_seq,
                method=calibrated.method,
                blocks_total=calibrated.blocks_total,
                blocks_done=0,
                pairs_found=0,
                target_fmr=calibrated.target_fmr,
                match_threshold=calibrated.match_threshold,
                possible_threshold=calibrated.possible_threshold,
                expected_false_pairs=calibrated.expected_false_pairs,
                tail=calibrated.tail,
            )

    def commit(self, blocks_done: int, pairs: list[PairRow]) -> None:
        with transaction(self.sessions) as session:
            self._renew(session, blocks_done=blocks_done, pairs_found=DeduplicationJob.pairs_found + len(pairs))
            if pairs:
                session.execute(insert(DeduplicationPair), [{"job_id": self.job_id, **p.__dict__} for p in pairs])
                self._keep_best(session)

    def _renew(self, session: Session, **values: Any) -> None:
        renewed = session.execute(
            update(DeduplicationJob)
            .where(DeduplicationJob.id == self.job_id, DeduplicationJob.lease_owner == self.owner)
            .values(lease_expires=utcnow() + timedelta(seconds=self.lease_s), **values)
        )
        if not cast(CursorResult[Any], renewed).rowcount:
            raise LeaseLost(f"deduplication job {self.job_id} was taken over")

    def _keep_best(self, session: Session) -> None:
        """Beyond ``max_pairs``, the lowest-scoring pairs go, with every pair tied with the
        first that goes: which of equal pairs to keep would depend on the order they were found
        in, so at most ``max_pairs`` stay, the same whatever that order."""
        max_pairs = session.scalar(select(DeduplicationJob.max_pairs).where(DeduplicationJob.id == self.job_id))
        cut = session.scalar(
            select(DeduplicationPair.score)
            .where(DeduplicationPair.job_id == self.job_id)
            .order_by(DeduplicationPair.score.desc())
            .offset(cast(int, max_pairs))
            .limit(1)
        )
        if cut is not None:
            session.execute(
                delete(DeduplicationPair).where(DeduplicationPair.job_id == self.job_id, DeduplicationPair.score <= cut)
            )


def finish(sessions: Sessions, job_id: int, owner: str) -> None:
    """The job done, audited (by the service) with what it found."""
    with transaction(sessions) as session:
        job = session.get_one(DeduplicationJob, job_id)
        if job.lease_owner != owner:
            raise LeaseLost(f"deduplication job {job_id} was taken over")
        stored = session.scalar(
            select(func.count()).select_from(DeduplicationPair).where(DeduplicationPair.job_id == job_id)
        )
        job.status, job.finished_at, job.lease_owner, job.lease_expires = JobStatus.DONE.value, utcnow(), None, None
        audit.append(
            session,
            None,
            Action.DEDUPLICATION_FINISH,
            job_resource(job),
            [_country(session, job)],
            details={
                "pairs_found": job.pairs_found,
                "pairs_stored": int(stored or 0),
                "threshold": job.match_threshold,
                "expected_false_pairs": job.expected_false_pairs,
            },
        )


def fail(sessions: Sessions, job_id: int, owner: str, reason: str) -> None:
    with transaction(sessions) as session:
        job = session.get_one(DeduplicationJob, job_id)
        if job.lease_owner != owner:
            return
        job.status, job.error, job.finished_at = JobStatus.FAILED.value, reason[:200], utcnow()
        job.lease_owner = job.lease_expires = None
        audit.append(
            session,
            None,
            Action.DEDUPLICATION_FAIL,
            job_resource(job),
            [_country(session, job)],
            "failed",
            {"reason": reason[:200]},
        )


def _country(session: Session, job: DeduplicationJob) -> str:
    return session.get_one(Gallery, job.gallery_id).country
