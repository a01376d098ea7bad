"""Enrolment: the one core that stores records, for every front door.

The API's batch call and the operators' bulk load (CLI, benchmarks) differ only in what they
do around the core: the API applies each committed batch to the live index under the gallery's
write lock; the bulk load commits batch after batch with the service stopped and rebuilds the
index at the end. Both go through :func:`stage`: validation with one shape of rejected record,
idempotence by reference id, multi-row inserts of new records (SQLAlchemy Core with RETURNING,
not one ORM object per row), replacement of changed ones, one ``change_seq`` step and one audit
event per committed batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.core.errors import DomainError
from app.db.base import utcnow
from app.db.session import Sessions, transaction
from app.galleries.exceptions import BatchTooLarge, DuplicateReference, MissingReference
from app.galleries.models import Gallery, Record, Template
from app.galleries.service import bump_change_seq, template_format, writable_gallery, writing
from app.galleries.templates import EncodedTemplates, to_bytes
from app.indexes.registry import IndexChange, IndexRegistry
from app.principals.exceptions import UnknownPrincipal
from app.principals.models import Principal


@dataclass(frozen=True)
class RecordSubmission:
    """One record as a front door received it; ``position`` is where it stood in what the
    caller sent (the batch, or the whole file), so that a rejection points back to it."""

    position: int
    reference_id: str
    templates: EncodedTemplates
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RejectedRecord:
    position: int
    reference_id: str
    code: str
    message: str


@dataclass
class EnrolmentOutcome:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RejectedRecord] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.inserted + self.updated + self.unchanged + len(self.rejected)

    def add(self, other: EnrolmentOutcome) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected += other.rejected


@dataclass(frozen=True)
class EnrolmentLimits:
    max_records: int
    max_templates_per_record: int


def enrol(
    sessions: Sessions,
    registry: IndexRegistry,
    actor: Principal,
    gallery_id: int,
    submissions: Sequence[RecordSubmission],
    limits: EnrolmentLimits,
) -> EnrolmentOutcome:
    """Insert new records, replace changed ones, leave identical ones alone; bad records are
    reported one by one and the good ones kept. Searchable when this returns."""
    if len(submissions) > limits.max_records:
        raise BatchTooLarge(f"{len(submissions)} records in one call, at most {limits.max_records} allowed")
    with writing(sessions, registry, actor, gallery_id):
        with transaction(sessions) as session:
            outcome, change, seq = stage(
                session, actor, writable_gallery(session, actor, gallery_id), submissions, limits
            )
        registry.apply(gallery_id, seq, change)
    return outcome


def load(
    sessions: Sessions,
    actor_id: int,
    gallery_id: int,
    source: Iterable[RecordSubmission],
    limits: EnrolmentLimits,
    on_batch: Callable[[EnrolmentOutcome], None] = lambda outcome: None,
) -> EnrolmentOutcome:
    """Bulk load with the service stopped: batches of ``limits.max_records``, one transaction
    each, so that an interrupted load keeps every committed batch and a rerun skips what is
    already there unchanged. The caller rebuilds the index afterwards."""
    with sessions() as session:  # refuse a wrong principal or gallery before reading the source
        actor = session.get(Principal, actor_id)
        if actor is None:
            raise UnknownPrincipal(f"principal {actor_id} not found")
        writable_gallery(session, actor, gallery_id)
    total = EnrolmentOutcome()
    batch: list[RecordSubmission] = []

    def commit() -> None:
        with transaction(sessions) as session:
            gallery = writable_gallery(session, actor, gallery_id)
            outcome, _, _ = stage(session, actor, gallery, batch, limits)
        total.add(outcome)
        on_batch(total)

    for submission in source:
        batch.append(submission)
        if len(batch) >= limits.max_records:
            commit()
            batch = []
    if batch:
        commit()
    return total


def stage(
    session: Session,
    actor: Principal,
    gallery: Gallery,
    submissions: Sequence[RecordSubmission],
    limits: EnrolmentLimits,
) -> tuple[EnrolmentOutcome, IndexChange, int]:
    """Write one batch in ``session``'s transaction; returns what happened, the change the
    index must take once it commits, and the gallery's change number after it."""
    outcome = EnrolmentOutcome()
    accepted = _decode(gallery, submissions, limits, outcome)
    existing = {
        record.reference_id: record
        for record in session.scalars(
            select(Record).where(Record.gallery_id == gallery.id, Record.reference_id.in_(list(accepted)))
        )
    }
    now = utcnow()
    new = [entry for reference, entry in accepted.items() if reference not in existing]
    changed = list(zip(_insert(session, actor, gallery, new, now), (templates for _, templates in new), strict=True))
    outcome.inserted = len(new)
    for reference, record in existing.items():
        submission, templates = accepted[reference]
        if record.refresh([to_bytes(t) for t in templates], submission.attributes, now):
            changed.append((record.id, templates))
            outcome.updated += 1
        else:
            outcome.unchanged += 1
    session.flush()
    seq = bump_change_seq(session, gallery) if changed else gallery.change_seq
    audit.append(
        session,
        actor,
        Action.RECORD_ENROL,
        f"gallery/{gallery.id}",
        outcome="ok" if not outcome.rejected else "partial",
        details={
            "inserted": outcome.inserted,
            "updated": outcome.updated,
            "unchanged": outcome.unchanged,
            "rejected": len(outcome.rejected),
            "reference_ids": list(accepted),
        },
    )
    return outcome, IndexChange.replacing(changed), seq


def _decode(
    gallery: Gallery, submissions: Sequence[RecordSubmission], limits: EnrolmentLimits, outcome: EnrolmentOutcome
) -> dict[str, tuple[RecordSubmission, np.ndarray]]:
    """The valid submissions by reference id, each with its decoded templates; the others go
    to ``outcome.rejected`` with their code."""
    fmt = template_format(gallery)
    accepted: dict[str, tuple[RecordSubmission, np.ndarray]] = {}
    for submission in submissions:
        try:
            if not submission.reference_id:
                raise MissingReference("reference_id is missing")
            if submission.reference_id in accepted:
                raise DuplicateReference("reference_id appears twice in this batch")
            templates = submission.templates.decode(fmt, limits.max_templates_per_record)
            accepted[submission.reference_id] = (submission, templates)
        except DomainError as error:
            outcome.rejected.append(
                RejectedRecord(submission.position, submission.reference_id, error.code, error.message)
            )
    return accepted


def _insert(
    session: Session,
    actor: Principal,
    gallery: Gallery,
    records: list[tuple[RecordSubmission, np.ndarray]],
    now: datetime,
) -> list[int]:
    """Insert records known to be new, in multi-row statements; returns their ids in order."""
    if not records:
        return []
    ids = list(
        session.scalars(
            insert(Record).returning(Record.id, sort_by_parameter_order=True),
            [
                {
                    "gallery_id": gallery.id,
                    "reference_id": submission.reference_id,
                    "attributes": submission.attributes,
                    "template_count": len(templates),
                    "enrolled_at": now,
                    "enrolled_by": actor.id,
                    "updated_at": now,
                }
                for submission, templates in records
            ],
        )
    )
    session.execute(
        insert(Template),
        [
            {"record_id": record_id, "gallery_id": gallery.id, "sample": i, "vector": to_bytes(sample)}
            for record_id, (_, templates) in zip(ids, records, strict=True)
            for i, sample in enumerate(templates)
        ],
    )
    return ids
