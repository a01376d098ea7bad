"""Galleries and their records: creation, scoped reads, idempotent enrolment, deletion.

Every change is committed to the database together with its audit event and the gallery's
``change_seq`` bump, and only then applied to the gallery's matcher index, under the gallery's
write lock so that the index sees changes in commit order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.audit import service as audit
from app.core.config import Settings
from app.core.countries import check_country
from app.core.errors import Conflict, DomainError, NotFound
from app.db.base import utcnow
from app.db.session import transaction
from app.galleries.models import Gallery, Record, Template
from app.galleries.schemas import RecordError, RecordIn
from app.galleries.templates import decode_templates, from_bytes, to_bytes
from app.indexes.registry import IndexChange, IndexRegistry
from app.principals.models import Principal, Role
from app.review.service import consular_may_read
from matcher import Metric, TemplateFormat


def template_format(gallery: Gallery) -> TemplateFormat:
    return TemplateFormat(gallery.model, gallery.dimension, Metric(gallery.metric))


def create_gallery(
    session: Session, actor: Principal, country: str, modality: str, model: str, dimension: int, metric: Metric
) -> Gallery:
    check_country(country)
    gallery = Gallery(
        country=country, modality=modality, model=model, dimension=dimension, metric=metric.value, change_seq=0
    )
    session.add(gallery)
    try:
        session.flush()
    except IntegrityError as error:
        raise Conflict(
            f"{country} already has a {modality} gallery for model {model}", code="duplicate_gallery"
        ) from error
    audit.append(
        session,
        actor,
        "gallery.create",
        f"gallery/{gallery.id}",
        details={"country": country, "modality": modality, "model": model},
    )
    return gallery


def visible_gallery(session: Session, actor: Principal, gallery_id: int) -> Gallery:
    """The gallery if ``actor`` may see it (admin: any; registry: its own country), else 404."""
    gallery = session.get(Gallery, gallery_id)
    if gallery is None or not (
        actor.role == Role.ADMIN.value or (actor.role == Role.REGISTRY.value and actor.country == gallery.country)
    ):
        raise NotFound(f"gallery {gallery_id} not found", code="unknown_gallery")
    return gallery


def gallery_counts(session: Session, gallery_id: int) -> tuple[int, int]:
    """(records, templates) as the database holds them."""
    records = session.scalar(select(func.count()).select_from(Record).where(Record.gallery_id == gallery_id))
    templates = session.scalar(
        select(func.coalesce(func.sum(Record.template_count), 0)).where(Record.gallery_id == gallery_id)
    )
    return int(records or 0), int(templates or 0)


def list_galleries(session: Session, actor: Principal) -> list[Gallery]:
    query = select(Gallery).order_by(Gallery.id)
    if actor.role != Role.ADMIN.value:
        query = query.where(Gallery.country == actor.country)
    return list(session.scalars(query))


def all_galleries(session: Session) -> list[Gallery]:
    return list(session.scalars(select(Gallery).order_by(Gallery.id)))


def iter_gallery_templates(
    session: Session, gallery_id: int, dimension: int, chunk: int = 20_000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every (record ids, templates) of a gallery in chunks, for rebuilding its index."""
    rows = session.execute(
        select(Template.record_id, Template.vector)
        .where(Template.gallery_id == gallery_id)
        .order_by(Template.id)
        .execution_options(yield_per=chunk)
    )
    for partition in rows.partitions(chunk):
        ids = np.fromiter((row[0] for row in partition), dtype=np.int64, count=len(partition))
        yield ids, from_bytes([row[1] for row in partition], dimension)


@dataclass
class EnrolmentOutcome:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RecordError] = field(default_factory=list)


@dataclass
class _Accepted:
    item: RecordIn
    templates: np.ndarray


def ensure_writable(factory: sessionmaker[Session], actor: Principal, gallery_id: int) -> None:
    """A gallery the actor may write to (a registry officer's own country's), else 404. Checked
    before the index's write lock is taken: an unknown gallery has no index to lock, and must be
    a 404 like any other unknown resource, not an unavailable index."""
    with factory() as session:
        visible_gallery(session, actor, gallery_id)
    if actor.role != Role.REGISTRY.value:
        raise NotFound(f"gallery {gallery_id} not found", code="unknown_gallery")


def enrol_batch(
    factory: sessionmaker[Session],
    registry: IndexRegistry,
    settings: Settings,
    actor: Principal,
    gallery_id: int,
    items: list[RecordIn],
) -> EnrolmentOutcome:
    """Insert new records, replace changed ones, leave identical ones alone (idempotent by
    reference id). Bad records are reported one by one; the good ones are kept."""
    if len(items) > settings.max_batch_records:
        raise DomainError(
            f"{len(items)} records in one call, at most {settings.max_batch_records} allowed",
            code="batch_too_large",
        )
    outcome = EnrolmentOutcome()
    ensure_writable(factory, actor, gallery_id)
    with registry.writing(gallery_id):
        with transaction(factory) as session:
            gallery = visible_gallery(session, actor, gallery_id)
            accepted = _validate(template_format(gallery), items, settings, outcome)
            existing = {
                record.reference_id: record
                for record in session.scalars(
                    select(Record).where(
                        Record.gallery_id == gallery_id,
                        Record.reference_id.in_([a.item.reference_id for a in accepted]),
                    )
                )
            }
            change = IndexChange()
            now = utcnow()
            for entry in accepted:
                record = existing.get(entry.item.reference_id)
                vectors = [to_bytes(t) for t in entry.templates]
                if record is None:
                    record = Record(
                        gallery_id=gallery_id,
                        reference_id=entry.item.reference_id,
                        attributes=entry.item.attributes,
                        template_count=len(vectors),
                        enrolled_by=actor.id,
                        enrolled_at=now,
                        updated_at=now,
                        templates=[Template(gallery_id=gallery_id, sample=i, vector=v) for i, v in enumerate(vectors)],
                    )
                    session.add(record)
                    outcome.inserted += 1
                elif record.refresh(vectors, entry.item.attributes, now):
                    outcome.updated += 1
                else:
                    outcome.unchanged += 1
                    continue
                change.pending.append((record, entry.templates))
            session.flush()
            change.resolve()
            seq = _bump(session, gallery, changed=outcome.inserted + outcome.updated)
            audit.append(
                session,
                actor,
                "records.enrol",
                f"gallery/{gallery_id}",
                outcome="ok" if not outcome.errors else "partial",
                details={
                    "inserted": outcome.inserted,
                    "updated": outcome.updated,
                    "unchanged": outcome.unchanged,
                    "rejected": len(outcome.errors),
                    "reference_ids": [a.item.reference_id for a in accepted],
                },
            )
        registry.apply(gallery_id, seq, change)
    return outcome


def _validate(
    fmt: TemplateFormat, items: list[RecordIn], settings: Settings, outcome: EnrolmentOutcome
) -> list[_Accepted]:
    accepted, seen = [], set()
    for index, item in enumerate(items):
        try:
            if item.reference_id in seen:
                raise DomainError("reference_id appears twice in this batch", code="duplicate_reference")
            seen.add(item.reference_id)
            templates = decode_templates(fmt, item.templates, item.templates_b64, settings.max_templates_per_record)
            accepted.append(_Accepted(item, templates))
        except DomainError as error:
            outcome.errors.append(
                RecordError(index=index, reference_id=item.reference_id, code=error.code, message=error.message)
            )
    return accepted


def _bump(session: Session, gallery: Gallery, changed: int) -> int:
    if changed == 0:
        return gallery.change_seq
    session.execute(update(Gallery).where(Gallery.id == gallery.id).values(change_seq=Gallery.change_seq + 1))
    session.refresh(gallery, ["change_seq"])
    return gallery.change_seq


def read_record(session: Session, actor: Principal, gallery_id: int, reference_id: str) -> Record:
    """Registry: its own country's records. Consular: its own country's records, only those a
    candidate points to. Everything else is 404."""
    missing = NotFound(f"record {reference_id} not found in gallery {gallery_id}")
    gallery = session.get(Gallery, gallery_id)
    if gallery is None or gallery.country != actor.country:
        raise missing
    record = session.scalar(select(Record).where(Record.gallery_id == gallery.id, Record.reference_id == reference_id))
    if record is None or (actor.role == Role.CONSULAR.value and not consular_may_read(session, actor, record.id)):
        raise missing
    audit.append(session, actor, "record.read", f"gallery/{gallery_id}/record/{reference_id}")
    return record


def delete_record(
    factory: sessionmaker[Session], registry: IndexRegistry, actor: Principal, gallery_id: int, reference_id: str
) -> None:
    """Delete a record and its templates; it is gone from matching when this returns."""
    ensure_writable(factory, actor, gallery_id)
    with registry.writing(gallery_id):
        with transaction(factory) as session:
            gallery = visible_gallery(session, actor, gallery_id)
            record = session.scalar(
                select(Record).where(Record.gallery_id == gallery.id, Record.reference_id == reference_id)
            )
            if record is None:
                raise NotFound(f"record {reference_id} not found in gallery {gallery_id}")
            record_id = record.id
            session.delete(record)
            seq = _bump(session, gallery, changed=1)
            audit.append(session, actor, "record.delete", f"gallery/{gallery_id}/record/{reference_id}")
        registry.apply(gallery_id, seq, IndexChange(removed=[record_id]))
