"""The gallery change log: written by every committed change to a gallery's records, in the
change's own transaction, and read by the processes that follow it (app/indexes/follower.py).

Each change transaction steps the gallery's ``change_seq`` (the UPDATE holds the gallery's row
until commit, so the numbers commit in order), writes one log row naming the records it upserted
and removed, and, on PostgreSQL, notifies the followers, who are woken at its commit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.db.base import utcnow
from app.db.bulk import one_of
from app.db.notify import GALLERY_CHANGES, notify
from app.db.session import Sessions, single_read
from app.galleries.models import Gallery, GalleryChange, Template
from app.galleries.stored import open_templates
from app.galleries.templates import from_bytes
from app.indexes.changes import LoggedChange, check_contiguous, pack_ids, unpack_ids

NO_IDS = np.empty(0, np.int64)


def log_change(
    session: Session,
    gallery: Gallery,
    upserted: Sequence[int] | np.ndarray = NO_IDS,
    removed: Sequence[int] | np.ndarray = NO_IDS,
) -> int:
    """One more committed change to the gallery's records, logged for the other processes;
    returns its number. ``upserted``: records new or replaced; ``removed``: records deleted."""
    seq = session.execute(
        update(Gallery)
        .where(Gallery.id == gallery.id)
        .values(change_seq=Gallery.change_seq + 1)
        # RETURNING is read from the server, not the session: another process may have stepped it
        .returning(Gallery.change_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    set_committed_value(gallery, "change_seq", seq)
    session.execute(
        insert(GalleryChange).values(
            gallery_id=gallery.id,
            change_seq=seq,
            upserted=pack_ids(upserted),
            removed=pack_ids(removed),
            committed_at=utcnow(),
        )
    )
    notify(session, GALLERY_CHANGES, f"{gallery.id}:{seq}")
    return int(seq)


def announce_gallery(session: Session, gallery_id: int) -> None:
    """Wake the followers for a gallery just created, so that they open its index at once."""
    notify(session, GALLERY_CHANGES, f"{gallery_id}:0")


_SEQS = select(Gallery.id, Gallery.change_seq)


class DatabaseChangeFeed:
    """The change log and the stored templates, read for the index registry and its follower.
    ``sessions`` should be read sessions: reading never waits for this process's writers."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def seqs(self) -> dict[int, int]:
        with single_read(self.sessions) as connection:
            return {gallery_id: seq for gallery_id, seq in connection.execute(_SEQS)}

    def changes_after(self, gallery_id: int, after_seq: int, upto_seq: int | None) -> list[LoggedChange]:
        query = select(GalleryChange).where(
            GalleryChange.gallery_id == gallery_id, GalleryChange.change_seq > after_seq
        )
        if upto_seq is not None:
            query = query.where(GalleryChange.change_seq <= upto_seq)
        with self.sessions() as session:
            changes = [
                LoggedChange(row.change_seq, row.committed_at, unpack_ids(row.upserted), unpack_ids(row.removed))
                for row in session.scalars(query.order_by(GalleryChange.change_seq))
            ]
        check_contiguous(changes, after_seq, upto_seq)
        return changes

    def current_templates(
        self, gallery_id: int, dimension: int, record_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if not len(record_ids):
            return NO_IDS, np.empty((0, dimension), np.float32)
        with self.sessions() as session:
            rows = session.execute(
                select(Template.record_id, Template.sample, Template.vector)
                .where(Template.gallery_id == gallery_id, one_of(session, Template.record_id, record_ids.tolist()))
                .order_by(Template.record_id, Template.sample)
            ).all()
            if not rows:  # every one deleted since: and no data key to ask for
                return NO_IDS, np.empty((0, dimension), np.float32)
            vectors = open_templates(session, gallery_id, [(row[0], row[1], row[2]) for row in rows])
        return np.fromiter((row[0] for row in rows), np.int64, len(rows)), from_bytes(vectors, dimension)
