"""Calibration samples kept in the database, shared by every process and node of the service.

A sample is drawn by leave-one-out searches of the gallery (app/matching/thresholds.py): seconds
of matcher time on a large gallery, and random. Drawn by each process for itself, it would cost
every start and every added process those seconds, and two processes would read slightly
different thresholds from their own samples, so that one probe's band would depend on which
process answered it. Stored once, the first process to need it draws it and the others read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from app.db.base import utcnow
from app.db.session import Sessions, transaction, upsert_statement
from app.matching.models import StoredCalibration

DECISIONS_DTYPE = np.dtype("<f8")
PAIRS_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class GalleryCalibration:
    """A gallery's non-mated samples, drawn when it held ``template_count`` templates."""

    template_count: int
    nonmated_decisions: np.ndarray
    nonmated_pairs: np.ndarray

    def fits(self, template_count: int) -> bool:
        """Still the gallery's sample: its size has not drifted by more than a tenth since."""
        return abs(template_count - self.template_count) <= 0.1 * max(self.template_count, 1)


def load(sessions: Sessions, gallery_id: int, statistic: str) -> GalleryCalibration | None:
    """The stored sample of the gallery drawn with ``statistic``; None if there is none."""
    with sessions() as session:
        row = session.execute(
            select(
                StoredCalibration.template_count,
                StoredCalibration.nonmated_decisions,
                StoredCalibration.nonmated_pairs,
            ).where(StoredCalibration.gallery_id == gallery_id, StoredCalibration.statistic == statistic)
        ).one_or_none()
    if row is None:
        return None
    return GalleryCalibration(
        row.template_count,
        np.frombuffer(row.nonmated_decisions, DECISIONS_DTYPE).astype(np.float64),
        np.frombuffer(row.nonmated_pairs, PAIRS_DTYPE).astype(np.float32),
    )


def store(sessions: Sessions, gallery_id: int, statistic: str, calibration: GalleryCalibration) -> None:
    """Replace the gallery's stored sample. Two processes drawing at once both store; the last
    one stays, and each keeps using its own until its next look finds the gallery drifted."""
    values = {
        "statistic": statistic,
        "template_count": calibration.template_count,
        "nonmated_decisions": calibration.nonmated_decisions.astype(DECISIONS_DTYPE).tobytes(),
        "nonmated_pairs": calibration.nonmated_pairs.astype(PAIRS_DTYPE).tobytes(),
        "drawn_at": utcnow(),
    }
    with transaction(sessions) as session:
        session.execute(
            upsert_statement(session, StoredCalibration)
            .values(gallery_id=gallery_id, **values)
            .on_conflict_do_update(index_elements=[StoredCalibration.gallery_id], set_=values)
        )
