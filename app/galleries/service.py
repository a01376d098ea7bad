"""Galleries and their records: creation, scoped reads, deletion (enrolment: enrolment.py).

Every change is committed to the database together with its audit event, the gallery's
``change_seq`` step and its change log row (app/galleries/changes.py), and only then applied to
this process's index of the gallery, under the gallery's write lock so that the index sees
changes in commit order; the other processes apply it from the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.core.countries import check_country
from app.db.base import utcnow
from app.db.session import Sessions, insert, transaction
from app.encryption.keyring import Keyring, gallery_scope
from app.galleries import history
from app.galleries.access import visible_gallery, writable_gallery
from app.galleries.changes import announce_gallery, log_change
from app.galleries.exceptions import DuplicateGallery, UnknownRecord
from app.galleries.models import Gallery, Record, Template
from app.galleries.stored import open_templates
from app.galleries.templates import from_bytes
from app.indexes.registry import IndexChange, IndexRegistry
from app.principals.models import Principal, Role
from matcher import Metric, TemplateFormat


@dataclass(frozen=True)
class GalleryView:
    """A gallery as every front door shows it: its format, what the database holds, and the
    state of its index."""

    id: int
    country: str
    modality: str
    template_format: TemplateFormat
    record_count: int
    template_count: int
    index_kind: str | None
    index_ready: bool
    change_seq: int
    created_at: datetime


@dataclass(frozen=True)
class RecordView:
    """A record without its templates, which never leave the service."""

    gallery_id: int
    reference_id: str
    attributes: dict[str, Any]
    template_count: int
    qualities: list[float | None] | None
    """The quality (0-100) of each template, None where unknown; None when none was given."""
    enrolled_at: datetime
    updated_at: datetime
    version: int


class Formatted(Protocol):
    """A gallery, or a row of its format's columns."""

    @property
    def model(self) -> str: ...
    @property
    def dimension(self) -> int: ...
    @property
    def metric(self) -> str: ...


def template_format(gallery: Formatted) -> TemplateFormat:
    return TemplateFormat(gallery.model, gallery.dimension, Metric(gallery.metric))


def create_gallery(
    sessions: Sessions,
    registry: IndexRegistry,
    actor: Principal,
    country: str,
    modality: str,
    fmt: TemplateFormat,
) -> GalleryView:
    """A gallery fixes its template format; it is searchable (empty) when this returns. One the
    matcher has no room for (no free CPUs for its shards: ``shards_unplaceable``) is refused
    before anything is stored, so that a retry is not a duplicate."""
    check_country(country)
    registry.check_room()
    gallery = Gallery(
        country=country,
        modality=modality,
        model=fmt.model,
        dimension=fmt.dimension,
        metric=fmt.metric.value,
        change_seq=0,
    )
    with ExitStack() as creating:  # the follower leaves the gallery to this process until it is opened
        with transaction(sessions) as session:
            conflict = DuplicateGallery(f"{country} already has a {modality} gallery for model {fmt.model}")
            insert(session, gallery, on_conflict=conflict)
            creating.enter_context(registry.creating(gallery.id))
            Keyring.of(session).ensure_key(session, gallery_scope(gallery.id))
            audit.append(
                session,
                actor,
                Action.GALLERY_CREATE,
                f"gallery/{gallery.id}",
                [country],
                details={"country": country, "modality": modality, "model": fmt.model},
            )
            announce_gallery(session, gallery.id)
        registry.create_empty(gallery.id, fmt)
    return _view(registry, gallery, 0, 0)


def read_gallery(sessions: Sessions, registry: IndexRegistry, actor: Principal, gallery_id: int) -> GalleryView:
    with sessions() as session:
        gallery = visible_gallery(session, actor, gallery_id)
        return _view(registry, gallery, *gallery_counts(session, gallery_id))


def list_galleries(sessions: Sessions, registry: IndexRegistry, actor: Principal) -> list[GalleryView]:
    """Every gallery for the admin; its own country's for anyone else."""
    query = select(Gallery).order_by(Gallery.id)
    if actor.role != Role.ADMIN.value:
        query = query.where(Gallery.country == actor.country)
    with sessions() as session:
        return [_view(registry, gallery, *gallery_counts(session, gallery.id)) for gallery in session.scalars(query)]


def _view(registry: IndexRegistry, gallery: Gallery, records: int, templates: int) -> GalleryView:
    loaded = registry.is_loaded(gallery.id)
    return GalleryView(
        id=gallery.id,
        country=gallery.country,
        modality=gallery.modality,
        template_format=template_format(gallery),
        record_count=records,
        template_count=templates,
        index_kind=registry.get(gallery.id).kind.value if loaded else None,
        index_ready=loaded,
        change_seq=gallery.change_seq,
        created_at=gallery.created_at,
    )


@contextmanager
def writing(sessions: Sessions, registry: IndexRegistry, actor: Principal, gallery_id: int) -> Iterator[None]:
    """Hold the gallery's index write lock for a registry officer of its country, so that the
    index takes committed changes in commit order. Anyone else gets the 404 before the lock,
    which only a loaded index has (an unknown gallery is not an unavailable index)."""
    with sessions() as session:
        writable_gallery(session, actor, gallery_id)
    with registry.writing(gallery_id):
        yield


def gallery_counts(session: Session, gallery_id: int) -> tuple[int, int]:
    """(records, templates) as the database holds them."""
    records = session.scalar(select(func.count()).select_from(Record).where(Record.gallery_id == gallery_id))
    templates = session.scalar(
        select(func.coalesce(func.sum(Record.template_count), 0)).where(Record.gallery_id == gallery_id)
    )
    return int(records or 0), int(templates or 0)


def indexed_state(session: Session, gallery_id: int) -> tuple[Gallery, int] | None:
    """The gallery and its template count, read in one statement so that they agree (its
    change number and count as of one commit), or None."""
    templates = (
        select(func.coalesce(func.sum(Record.template_count), 0))
        .where(Record.gallery_id == gallery_id)
        .scalar_subquery()
    )
    row = session.execute(select(Gallery, templates).where(Gallery.id == gallery_id)).one_or_none()
    return None if row is None else (row[0], int(row[1]))


def all_galleries(session: Session) -> list[Gallery]:
    return list(session.scalars(select(Gallery).order_by(Gallery.id)))


def iter_gallery_templates(
    session: Session, gallery_id: int, dimension: int, chunk: int = 20_000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every (record ids, templates) of a gallery in chunks, for rebuilding its index."""
    rows = session.execute(
        select(Template.record_id, Template.sample, Template.vector)
        .where(Template.gallery_id == gallery_id)
        .order_by(Template.id)
        .execution_options(yield_per=chunk)
    )
    for partition in rows.partitions(chunk):
        ids = np.fromiter((row[0] for row in partition), dtype=np.int64, count=len(partition))
        yield (
            ids,
            from_bytes(open_templates(session, gallery_id, [(row[0], row[1], row[2]) for row in partition]), dimension),
        )


def find_record(session: Session, gallery_id: int, reference_id: str, country: str | None) -> Record:
    """The record of a gallery of ``country``, else 404 (whatever the reason)."""
    gallery = session.get(Gallery, gallery_id)
    record = (
        session.scalar(select(Record).where(Record.gallery_id == gallery_id, Record.reference_id == reference_id))
        if gallery is not None and gallery.country == country
        else None
    )
    if record is None:
        raise UnknownRecord(f"record {reference_id} not found in gallery {gallery_id}")
    return record


def record_view(record: Record) -> RecordView:
    return RecordView(
        record.gallery_id,
        record.reference_id,
        record.attributes,
        record.template_count,
        record.qualities,
        record.enrolled_at,
        record.updated_at,
        record.version,
    )


def read_record(sessions: Sessions, actor: Principal, gallery_id: int, reference_id: str) -> RecordView:
    """A registry officer reads a record of its own country (the read is audited); a consul's
    read goes through review, which knows the candidates that allow it."""
    with transaction(sessions) as session:
        record = find_record(session, gallery_id, reference_id, actor.country)
        audit.append(session, actor, Action.RECORD_READ, f"gallery/{gallery_id}/record/{reference_id}", [actor.country])
        return record_view(record)


def delete_record(
    sessions: Sessions, registry: IndexRegistry, actor: Principal, gallery_id: int, reference_id: str
) -> None:
    """Delete a record and its templates; it is gone from matching when this returns. Its
    history keeps a tombstone and loses the attributes of every version (app/galleries/history.py)."""
    with writing(sessions, registry, actor, gallery_id):
        with transaction(sessions) as session:
            gallery = writable_gallery(session, actor, gallery_id)
            record = find_record(session, gallery_id, reference_id, gallery.country)
            record_id = record.id
            history.erase(session, record, actor, utcnow())
            session.delete(record)
            seq = log_change(session, gallery, removed=[record_id])
            audit.append(
                session, actor, Action.RECORD_DELETE, f"gallery/{gallery_id}/record/{reference_id}", [gallery.country]
            )
        registry.apply(gallery_id, seq, IndexChange(removed=[record_id]))
