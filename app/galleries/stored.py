"""Templates as the database stores them: sealed under their gallery's data key (see
:mod:`app.encryption.sealing`), each bound to its gallery, record and sample; or in clear while
encryption at rest is off."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from app.encryption.keyring import Keyring, gallery_scope
from app.encryption.sealing import template_place
from app.galleries.models import Record

Placed = tuple[int, int, bytes]
"""(record id, sample, bytes) of one template."""


def seal_templates(session: Session, gallery_id: int, templates: Sequence[Placed]) -> list[bytes]:
    """The values to store for ``templates`` (clear float32 bytes), in order."""
    sealer = Keyring.of(session).sealer(session, gallery_scope(gallery_id))
    if sealer is None:
        return [value for _, _, value in templates]
    return sealer.seal_many(
        [value for _, _, value in templates],
        [template_place(gallery_id, record_id, sample) for record_id, sample, _ in templates],
    )


def open_templates(session: Session, gallery_id: int, stored: Sequence[Placed]) -> list[bytes]:
    """The float32 bytes of stored templates, in order; raises SealedValueRefused on any value
    altered or moved from another place."""
    sealer = Keyring.of(session).sealer(session, gallery_scope(gallery_id))
    if sealer is None:
        return [value for _, _, value in stored]
    return [sealer.open(value, template_place(gallery_id, record_id, sample)) for record_id, sample, value in stored]


def record_templates(session: Session, record: Record) -> list[bytes]:
    """The float32 bytes of a record's stored templates, in sample order."""
    return open_templates(session, record.gallery_id, [(record.id, t.sample, t.vector) for t in record.templates])
