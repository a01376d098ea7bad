"""Bulk loading of records for operators and benchmarks: SQLAlchemy Core inserts in large
batches (executemany with RETURNING, which SQLAlchemy sends as multi-row INSERTs on SQLite and
PostgreSQL), not one ORM object per row. The caller rebuilds or updates the index afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.audit import service as audit
from app.db.base import utcnow
from app.db.session import transaction
from app.galleries.models import Gallery, Record, Template
from app.galleries.sources import SourceRecord
from app.galleries.templates import to_bytes
from app.principals.models import Principal
from matcher import InvalidTemplateError, Metric, TemplateFormat, prepare_templates


def insert_new_records(
    session: Session,
    actor: Principal,
    gallery: Gallery,
    reference_ids: list[str],
    templates: list[np.ndarray],
    attributes: list[dict[str, Any]],
) -> np.ndarray:
    """Insert records known to be new (validated templates); returns their ids. One audit event
    and one change-sequence step for the whole batch."""
    now = utcnow()
    rows = [
        {
            "gallery_id": gallery.id,
            "reference_id": ref,
            "attributes": attrs,
            "template_count": len(samples),
            "enrolled_at": now,
            "enrolled_by": actor.id,
            "updated_at": now,
        }
        for ref, samples, attrs in zip(reference_ids, templates, attributes, strict=True)
    ]
    ids = np.array(
        session.scalars(insert(Record).returning(Record.id, sort_by_parameter_order=True), rows).all(), dtype=np.int64
    )
    session.execute(
        insert(Template),
        [
            {"record_id": int(record_id), "gallery_id": gallery.id, "sample": i, "vector": to_bytes(sample)}
            for record_id, samples in zip(ids, templates, strict=True)
            for i, sample in enumerate(samples)
        ],
    )
    session.execute(update(Gallery).where(Gallery.id == gallery.id).values(change_seq=Gallery.change_seq + 1))
    audit.append(
        session,
        actor,
        "records.bulk_insert",
        f"gallery/{gallery.id}",
        details={"inserted": len(rows), "first_reference_id": reference_ids[0] if reference_ids else None},
    )
    return ids


@dataclass
class BulkSummary:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.inserted + self.updated + self.unchanged + len(self.rejected)


def enrol_stream(
    sessions: sessionmaker[Session],
    actor_id: int,
    gallery_id: int,
    source: Iterable[SourceRecord],
    batch_size: int,
    on_batch: Callable[[BulkSummary], None] = lambda summary: None,
) -> BulkSummary:
    """Enrol a stream of records in batches, one transaction each, so that an interrupted load
    keeps every committed batch and a rerun skips what is already there unchanged (idempotent by
    reference id). New records go in through bulk inserts; changed ones are replaced."""
    summary = BulkSummary()
    batch: list[SourceRecord] = []
    for item in source:
        batch.append(item)
        if len(batch) >= batch_size:
            _enrol_batch(sessions, actor_id, gallery_id, batch, summary)
            on_batch(summary)
            batch = []
    if batch:
        _enrol_batch(sessions, actor_id, gallery_id, batch, summary)
        on_batch(summary)
    return summary


def _enrol_batch(
    sessions: sessionmaker[Session], actor_id: int, gallery_id: int, batch: list[SourceRecord], summary: BulkSummary
) -> None:
    with transaction(sessions) as session:
        actor = session.get(Principal, actor_id)
        gallery = session.get(Gallery, gallery_id)
        if actor is None or gallery is None:
            raise ValueError("unknown principal or gallery")
        fmt = TemplateFormat(gallery.model, gallery.dimension, Metric(gallery.metric))
        valid: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
        for item in batch:
            try:
                if not item.reference_id:
                    raise InvalidTemplateError("reference_id is missing")
                if item.reference_id in valid:
                    raise InvalidTemplateError("reference_id appears twice in this batch")
                valid[item.reference_id] = (prepare_templates(item.templates, fmt), item.attributes)
            except (InvalidTemplateError, ValueError, TypeError) as error:
                code = "duplicate_reference" if "twice" in str(error) else "invalid_template"
                summary.rejected.append(
                    {"position": item.position, "reference_id": item.reference_id, "code": code, "message": str(error)}
                )
        existing = {
            record.reference_id: record
            for record in session.scalars(
                select(Record).where(Record.gallery_id == gallery_id, Record.reference_id.in_(list(valid)))
            )
        }
        new = [ref for ref in valid if ref not in existing]
        if new:
            insert_new_records(session, actor, gallery, new, [valid[r][0] for r in new], [valid[r][1] for r in new])
            summary.inserted += len(new)
        updated = []
        for reference, record in existing.items():
            templates, attributes = valid[reference]
            vectors = [to_bytes(t) for t in templates]
            if record.refresh(vectors, attributes, utcnow()):
                updated.append(reference)
            else:
                summary.unchanged += 1
        if updated:
            summary.updated += len(updated)
            session.execute(update(Gallery).where(Gallery.id == gallery_id).values(change_seq=Gallery.change_seq + 1))
            audit.append(
                session,
                actor,
                "records.bulk_update",
                f"gallery/{gallery_id}",
                details={"updated": len(updated), "reference_ids": updated},
            )
