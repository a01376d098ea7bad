"""Enrolment: the one core that stores records, for every front door.

The API's batch call and the operators' bulk load (CLI, benchmarks) differ only in what they
do around the core: the API applies each committed batch to the live index under the gallery's
write lock; the bulk load commits batch after batch with the service stopped and rebuilds the
index at the end. Both go through :func:`stage`, which works on a batch as arrays: the
templates of all its records are checked and normalised as one block (a bad record is still
refused on its own, with its position and a code), their qualities checked if sent
(app/galleries/qualities.py), new records get their ids reserved in one
statement and are written without RETURNING (``executemany`` on SQLite, ``COPY`` on
PostgreSQL), their templates sealed in one pass beforehand (app/galleries/stored.py), changed
ones are replaced (the versions they end kept in the record history, app/galleries/history.py),
identical ones left alone (idempotence by reference id), with one ``change_seq`` step, one change
log row (the ids upserted, for the other processes' indexes) and one audit event per committed
batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.core.errors import DomainError
from app.db.base import utcnow
from app.db.bulk import bind, one_of, reserve_ids, write_rows
from app.db.session import Sessions, transaction
from app.galleries import history, qualities
from app.galleries.access import writable_gallery
from app.galleries.changes import log_change
from app.galleries.exceptions import (
    BatchTooLarge,
    DuplicateReference,
    InvalidTemplate,
    MissingReference,
    TooManyTemplates,
)
from app.galleries.models import Gallery, Record, Template
from app.galleries.qualities import SampleQualities
from app.galleries.service import template_format, writing
from app.galleries.stored import record_templates, seal_templates
from app.galleries.templates import LITTLE_FLOAT32, EncodedTemplates, decode_single_base64, to_bytes
from app.indexes.registry import IndexChange, IndexRegistry
from app.principals.exceptions import UnknownPrincipal
from app.principals.models import Principal
from matcher import InvalidTemplateError, TemplateFormat
from matcher.validation import check_shape, fault_message, screen_templates


@dataclass(frozen=True)
class RecordSubmission:
    """One record as a front door received it; ``position`` is where it stood in what the
    caller sent (the batch, or the whole file), so that a rejection points back to it."""

    position: int
    reference_id: str
    templates: EncodedTemplates
    attributes: dict[str, Any] = field(default_factory=dict)
    qualities: Sequence[float | None] | None = None
    """One quality (0-100) per template, None where unknown; None: none sent (app/galleries/qualities.py)."""


@dataclass(frozen=True)
class RecordBlock:
    """Records read together from a file, their templates in one array: row i of ``templates``
    ((n, d), or (n, samples, d)) belongs to ``reference_ids[i]`` with ``attributes[i]``, and
    stood at ``first_position + i`` in the file; row i of ``qualities`` ((n,) or (n, samples),
    NaN where unknown), if any, holds the qualities of its templates."""

    first_position: int
    reference_ids: Sequence[str]
    attributes: Sequence[dict[str, Any]]
    templates: np.ndarray
    qualities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.reference_ids)

    def __getitem__(self, part: slice) -> RecordBlock:
        start, _, _ = part.indices(len(self))
        return RecordBlock(
            self.first_position + start,
            self.reference_ids[part],
            self.attributes[part],
            self.templates[part],
            self.qualities[part] if self.qualities is not None else None,
        )


Batch = Sequence[RecordSubmission] | RecordBlock
"""What one call of the core stores: records one by one as an API call sent them, or a block."""


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
    min_quality: dict[str, float] = field(default_factory=dict)
    """Per modality, the minimum enrolment quality below which every template of a record may
    not all be (READMIT_MIN_ENROLMENT_QUALITY)."""


def enrol(
    sessions: Sessions,
    registry: IndexRegistry,
    actor: Principal,
    gallery_id: int,
    submissions: Batch,
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
        if change is None:  # nothing new: but what is unchanged here may be new to this process's index
            registry.catch_up(gallery_id, seq)
        else:
            registry.apply(gallery_id, seq, change)
    return outcome


def load(
    sessions: Sessions,
    actor_id: int,
    gallery_id: int,
    source: Iterable[Batch],
    limits: EnrolmentLimits,
    on_batch: Callable[[EnrolmentOutcome], None] = lambda outcome: None,
) -> EnrolmentOutcome:
    """Bulk load with the service stopped: one transaction per batch of at most
    ``limits.max_records`` (larger batches of the source are split), so that an interrupted load
    keeps every committed batch and a rerun skips what is already there unchanged. The caller
    rebuilds the index afterwards."""
    with sessions() as session:  # refuse a wrong principal or gallery before reading the source
        actor = session.get(Principal, actor_id)
        if actor is None:
            raise UnknownPrincipal(f"principal {actor_id} not found")
        writable_gallery(session, actor, gallery_id)
    total = EnrolmentOutcome()
    for batch in source:
        for start in range(0, len(batch), limits.max_records):
            with transaction(sessions) as session:
                gallery = writable_gallery(session, actor, gallery_id)
                outcome, _, _ = stage(session, actor, gallery, batch[start : start + limits.max_records], limits)
            total.add(outcome)
            on_batch(total)
    return total


def stage(
    session: Session,
    actor: Principal,
    gallery: Gallery,
    batch: Batch,
    limits: EnrolmentLimits,
) -> tuple[EnrolmentOutcome, IndexChange | None, int]:
    """Write one batch in ``session``'s transaction; returns what happened, the change the
    index must take once it commits (None: no record changed), and the gallery's change number
    after it."""
    outcome = EnrolmentOutcome()
    accepted = _decode(gallery, batch, limits, outcome)
    existing: dict[str, int] = dict(
        session.execute(
            select(Record.reference_id, Record.id).where(
                Record.gallery_id == gallery.id, one_of(session, Record.reference_id, accepted.reference_ids)
            )
        ).all()
    )
    now = utcnow()
    new = [i for i, reference in enumerate(accepted.reference_ids) if reference not in existing]
    ids = _insert(session, actor, gallery, accepted, new, now)
    outcome.inserted = len(new)
    replaced = _replace(session, actor, accepted, existing, now, outcome)
    session.flush()
    upserted = ids + list(replaced.values())
    seq = log_change(session, gallery, upserted=upserted) if upserted else gallery.change_seq
    audit.append(
        session,
        actor,
        Action.RECORD_ENROL,
        f"gallery/{gallery.id}",
        [gallery.country],
        outcome="ok" if not outcome.rejected else "partial",
        details={
            "inserted": outcome.inserted,
            "updated": outcome.updated,
            "unchanged": outcome.unchanged,
            "rejected": len(outcome.rejected),
            "reference_ids": accepted.reference_ids,
        },
    )
    return outcome, accepted.change(new + list(replaced), upserted) if upserted else None, seq


@dataclass(frozen=True)
class _Accepted:
    """The valid records of a batch, in the order sent: record i has the templates in rows
    ``starts[i]`` to ``starts[i] + counts[i]`` of ``templates`` (checked, normalised), of
    qualities ``qualities[i]`` (``qualities`` None: the batch sent none)."""

    reference_ids: list[str]
    attributes: list[dict[str, Any]]
    templates: np.ndarray
    counts: np.ndarray
    qualities: list[SampleQualities | None] | None

    def qualities_of(self, record: int) -> SampleQualities | None:
        return self.qualities[record] if self.qualities is not None else None

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts

    def rows(self, records: Sequence[int]) -> np.ndarray:
        """The rows of ``templates`` that belong to ``records``, in their order."""
        chosen = np.asarray(records, dtype=np.int64)
        counts = self.counts[chosen]
        ends = np.cumsum(counts)
        return np.repeat(self.starts[chosen] - (ends - counts), counts) + np.arange(int(ends[-1]) if len(ends) else 0)

    def vectors(self, record: int) -> list[bytes]:
        start, count = int(self.starts[record]), int(self.counts[record])
        return [to_bytes(row) for row in self.templates[start : start + count]]

    def change(self, records: Sequence[int], ids: Sequence[int]) -> IndexChange:
        """The index change that gives each of ``records`` (now stored under ``ids``) exactly
        its templates."""
        rows = self.rows(records)
        return IndexChange(
            record_ids=np.repeat(np.asarray(ids, dtype=np.int64), self.counts[np.asarray(records)]),
            templates=self.templates[rows],
        )


def _decode(gallery: Gallery, batch: Batch, limits: EnrolmentLimits, outcome: EnrolmentOutcome) -> _Accepted:
    """The valid records; the others go to ``outcome.rejected`` with their position and code,
    checked in this order: reference id missing, reference id already in this batch, templates,
    qualities."""
    fmt = template_format(gallery)
    sent_qualities: Sequence[object] | None
    if isinstance(batch, RecordBlock):
        positions: Sequence[int] = range(batch.first_position, batch.first_position + len(batch))
        references, attributes = batch.reference_ids, batch.attributes
        block, counts, errors = _block_templates(batch.templates, fmt, limits)
        if batch.qualities is None:
            sent_qualities = None
        else:
            sent_qualities = qualities.from_array(batch.qualities.reshape(len(batch), -1))
    else:
        positions = [submission.position for submission in batch]
        references = [submission.reference_id for submission in batch]
        attributes = [submission.attributes for submission in batch]
        block, counts, errors = _submitted_templates(batch, fmt, limits)
        sent_qualities = [submission.qualities for submission in batch]
        if all(sent is None for sent in sent_qualities):
            sent_qualities = None
    checked, faults = screen_templates(block, fmt)
    ends = np.cumsum(counts)
    for record in np.unique(np.searchsorted(ends, np.flatnonzero(faults), side="right")).tolist():
        errors[record] = InvalidTemplate(fault_message(faults[ends[record] - counts[record] : ends[record]]))
    stored_qualities: list[SampleQualities | None] | None = None
    if sent_qualities is not None:
        minimum = limits.min_quality.get(gallery.modality)
        stored_qualities, refused = qualities.all_checked(sent_qualities, counts.tolist(), minimum)
        for record, refusal in refused.items():
            errors[record] = errors[record] or refusal
    kept: list[int] = []
    seen: set[str] = set()
    for record, reference in enumerate(references):
        error: DomainError | None
        if not reference:
            error = MissingReference("reference_id is missing")
        elif reference in seen:
            error = DuplicateReference("reference_id appears twice in this batch")
        else:
            error = errors[record]
        if error is None:
            seen.add(reference)
            kept.append(record)
        else:
            outcome.rejected.append(RejectedRecord(positions[record], reference, error.code, error.message))
    if len(kept) == len(references):
        return _Accepted(list(references), list(attributes), checked, counts, stored_qualities)
    keep = np.zeros(len(references), dtype=bool)
    keep[kept] = True
    return _Accepted(
        [references[i] for i in kept],
        [attributes[i] for i in kept],
        checked[np.repeat(keep, counts)],
        counts[keep],
        [stored_qualities[i] for i in kept] if stored_qualities is not None else None,
    )


def _block_templates(
    templates: np.ndarray, fmt: TemplateFormat, limits: EnrolmentLimits
) -> tuple[np.ndarray, np.ndarray, list[DomainError | None]]:
    """A block's templates, unchecked, as (rows, d) with each record's count; a block of the
    wrong shape refuses every record with the message each would get on its own."""
    records = len(templates)
    samples = int(np.prod(templates.shape[1:-1], dtype=np.int64))
    try:
        if templates.ndim < 2:
            raise InvalidTemplate(f"templates of a file must be (n, d) or (n, samples, d), got shape {templates.shape}")
        if samples > limits.max_templates_per_record:
            raise TooManyTemplates(f"{samples} templates given, at most {limits.max_templates_per_record} allowed")
        try:
            rows = templates.reshape(records * samples, templates.shape[-1])
            block = check_shape(rows, fmt) if records else np.empty((0, fmt.dimension), np.float32)
        except (InvalidTemplateError, ValueError) as error:
            raise InvalidTemplate(str(error)) from error
    except DomainError as error:
        return np.empty((0, fmt.dimension), np.float32), np.zeros(records, np.int64), [error] * records
    return block, np.full(records, samples, np.int64), [None] * records


def _submitted_templates(
    submissions: Sequence[RecordSubmission], fmt: TemplateFormat, limits: EnrolmentLimits
) -> tuple[np.ndarray, np.ndarray, list[DomainError | None]]:
    """Each submission's templates decoded (base64 or floats), unchecked, joined into one
    (rows, d) block with each record's count; a record that cannot be decoded has 0 rows and
    its error."""
    if limits.max_templates_per_record >= 1:
        block = decode_single_base64([submission.templates for submission in submissions], fmt.dimension)
        if block is not None:
            return check_shape(block, fmt), np.ones(len(submissions), np.int64), [None] * len(submissions)
    arrays: list[np.ndarray] = []
    counts = np.zeros(len(submissions), np.int64)
    errors: list[DomainError | None] = [None] * len(submissions)
    for record, submission in enumerate(submissions):
        try:
            array = submission.templates.unchecked(fmt, limits.max_templates_per_record)
        except DomainError as error:
            errors[record] = error
            continue
        arrays.append(array)
        counts[record] = len(array)
    block = np.concatenate(arrays) if arrays else np.empty((0, fmt.dimension), np.float32)
    return block, counts, errors


RECORD_COLUMNS = (
    "id",
    "gallery_id",
    "reference_id",
    "attributes",
    "template_count",
    "enrolled_at",
    "enrolled_by",
    "updated_at",
    "updated_by",
    "version",
    "qualities",
)
TEMPLATE_COLUMNS = ("record_id", "gallery_id", "sample", "vector")


def _insert(
    session: Session, actor: Principal, gallery: Gallery, accepted: _Accepted, new: list[int], now: datetime
) -> list[int]:
    """Write the records known to be new (``accepted``'s records at ``new``) and their
    templates, without RETURNING; returns their ids in order."""
    if not new:
        return []
    records, templates = cast(Table, Record.__table__), cast(Table, Template.__table__)
    ids = reserve_ids(session, records, len(new))
    versions = history.next_versions(session, gallery.id, [accepted.reference_ids[i] for i in new])
    as_json, as_qualities = bind(session, records.c.attributes), bind(session, records.c.qualities)
    at = bind(session, records.c.enrolled_at)(now)
    counts, starts = accepted.counts.tolist(), accepted.starts.tolist()
    gallery_id, actor_id = gallery.id, actor.id  # read once, not through the ORM's descriptors per row
    write_rows(
        session,
        records,
        RECORD_COLUMNS,
        [
            (
                record_id,
                gallery_id,
                accepted.reference_ids[i],
                as_json(accepted.attributes[i]),
                counts[i],
                at,
                actor_id,
                at,
                actor_id,
                versions.get(accepted.reference_ids[i], 1),
                as_qualities(accepted.qualities_of(i)),
            )
            for record_id, i in zip(ids, new, strict=True)
        ],
    )
    raw = to_bytes(accepted.templates)
    width = accepted.templates.shape[1] * LITTLE_FLOAT32.itemsize
    placed = [
        (record_id, sample, raw[row * width : (row + 1) * width])
        for record_id, i in zip(ids, new, strict=True)
        for sample, row in enumerate(range(starts[i], starts[i] + counts[i]))
    ]
    values = seal_templates(session, gallery_id, placed)
    write_rows(
        session,
        templates,
        TEMPLATE_COLUMNS,
        ((record_id, gallery_id, sample, value) for (record_id, sample, _), value in zip(placed, values, strict=True)),
    )
    return ids


def _replace(
    session: Session,
    actor: Principal,
    accepted: _Accepted,
    existing: dict[str, int],
    now: datetime,
    outcome: EnrolmentOutcome,
) -> dict[int, int]:
    """Give the records already stored their templates and attributes as sent, through the
    ORM (a replacement is rare next to inserts), each changed one's version before kept in its
    history; returns {accepted's index: record id} of those that changed."""
    if not existing:
        return {}
    index = {reference: i for i, reference in enumerate(accepted.reference_ids)}
    changed: list[tuple[Record, list[bytes]]] = []
    for record in session.scalars(select(Record).where(one_of(session, Record.id, list(existing.values())))):
        i = index[record.reference_id]
        held = record_templates(session, record)
        if (
            held == accepted.vectors(i)
            and record.attributes == accepted.attributes[i]
            and record.qualities == accepted.qualities_of(i)
        ):
            outcome.unchanged += 1
        else:
            changed.append((record, held))
    history.supersede(session, changed)
    replaced: dict[int, int] = {}
    for record, _ in changed:
        i = index[record.reference_id]
        placed = [(record.id, sample, vector) for sample, vector in enumerate(accepted.vectors(i))]
        sealed = seal_templates(session, record.gallery_id, placed)
        record.replace(sealed, accepted.qualities_of(i), accepted.attributes[i], now, actor.id)
        replaced[i] = record.id
        outcome.updated += 1
    return replaced
