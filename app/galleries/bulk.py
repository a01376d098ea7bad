"""Bulk loading of records for operators and benchmarks: SQLAlchemy Core inserts in large
batches (executemany with RETURNING, which SQLAlchemy sends as multi-row INSERTs on SQLite and
PostgreSQL), not one ORM object per row. The caller rebuilds or updates the index afterwards."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.db.base import utcnow
from app.galleries.models import Gallery, Record, Template
from app.galleries.templates import to_bytes
from app.principals.models import Principal


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
        {"gallery_id": gallery.id, "reference_id": ref, "attributes": attrs, "template_count": len(samples),
         "enrolled_at": now, "enrolled_by": actor.id, "updated_at": now}
        for ref, samples, attrs in zip(reference_ids, templates, attributes, strict=True)
    ]
    ids = np.array(session.scalars(insert(Record).returning(Record.id, sort_by_parameter_order=True), rows).all(),
                   dtype=np.int64)
    session.execute(insert(Template), [
        {"record_id": int(record_id), "gallery_id": gallery.id, "sample": i, "vector": to_bytes(sample)}
        for record_id, samples in zip(ids, templates, strict=True) for i, sample in enumerate(samples)
    ])
    session.execute(update(Gallery).where(Gallery.id == gallery.id).values(change_seq=Gallery.change_seq + 1))
    audit.append(session, actor, "records.bulk_insert", f"gallery/{gallery.id}",
                 details={"inserted": len(rows), "first_reference_id": reference_ids[0] if reference_ids else None})
    return ids
