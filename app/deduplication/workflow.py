"""One deduplication run, whoever keeps its progress: the service's job (the database) or
``readmit dedup`` (a state file beside its output). Both call :func:`deduplicate` with their own
:class:`Ledger`, so that calibration, blocks, checkpoints and resumption are written once.

The gallery's templates are read from the database (sealed at rest, opened in memory only), in
one read of the gallery at its current change number, and held as one float32 array for the
run; nothing of them is written anywhere. A run resumed at the same change number goes on from
the block after its last checkpoint with the thresholds it fixed at its start, so it finds the
same pairs as a run never interrupted; a gallery changed meanwhile starts the run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sqlalchemy import select

from app.db.session import Sessions
from app.galleries.models import Gallery, Record
from app.galleries.service import gallery_counts, iter_gallery_templates, template_format
from matcher import TemplateFormat
from matcher.dedup import (
    ROW_BLOCK,
    BlockPlan,
    Method,
    Pause,
    build_shortlist,
    calibrate,
    choose_method,
    clusters,
    contiguous_order,
    scan_block,
    shortlist_block,
)


@dataclass(frozen=True)
class PairRow:
    """A pair as it is stored and shown: reference ids, score, band."""

    reference_id_a: str
    reference_id_b: str
    score: float
    band: str


@dataclass(frozen=True)
class Calibrated:
    """What a run fixes before its first block, and keeps when it resumes."""

    change_seq: int
    method: str
    blocks_total: int
    target_fmr: float
    match_threshold: float
    possible_threshold: float
    expected_false_pairs: float
    tail: dict[str, Any]


@dataclass(frozen=True)
class Resumed:
    calibrated: Calibrated
    blocks_done: int


class Ledger(Protocol):
    """Where a run keeps its progress and its pairs."""

    def resume(self, change_seq: int) -> Resumed | None:
        """The saved progress if it was made at ``change_seq``; else None, anything saved
        discarded."""
        ...

    def begin(self, calibrated: Calibrated) -> None: ...

    def commit(self, blocks_done: int, pairs: list[PairRow]) -> None:
        """Keep ``pairs`` and the checkpoint ``blocks_done`` together, atomically."""
        ...


@dataclass(frozen=True)
class GalleryTemplates:
    template_format: TemplateFormat
    change_seq: int
    vectors: np.ndarray
    labels: np.ndarray
    """Record id of each row; each record's rows contiguous."""
    references: dict[int, str]


def read_gallery(sessions: Sessions, gallery_id: int) -> GalleryTemplates:
    """Every template of the gallery, opened, and each record's reference id."""
    with sessions() as session:
        gallery = session.get(Gallery, gallery_id)
        if gallery is None:
            raise KeyError(gallery_id)
        fmt, change_seq = template_format(gallery), gallery.change_seq
        _, count = gallery_counts(session, gallery_id)
        vectors = np.empty((count, fmt.dimension), dtype=np.float32)
        labels = np.empty(count, dtype=np.int64)
        filled = 0
        for ids, templates in iter_gallery_templates(session, gallery_id, fmt.dimension):
            vectors[filled : filled + ids.size], labels[filled : filled + ids.size] = templates, ids
            filled += ids.size
        rows = session.execute(select(Record.id, Record.reference_id).where(Record.gallery_id == gallery_id))
        references = {int(record_id): str(reference_id) for record_id, reference_id in rows}
    vectors, labels = vectors[:filled], labels[:filled]
    order = contiguous_order(labels)
    if order is not None:
        vectors, labels = vectors[order], labels[order]
    return GalleryTemplates(fmt, change_seq, vectors, labels, references)


BlockDone = Callable[[int, BlockPlan], None]
"""(blocks done, plan): told after each checkpoint, for a progress bar."""


def one_false_pair_fmr(templates: int) -> float:
    """The FMR at which ``templates`` compared pairwise expect one false pair."""
    comparisons = templates * (templates - 1) // 2
    return min(0.1, 1.0 / max(comparisons, 1))


def deduplicate(
    gallery: GalleryTemplates,
    target_fmr: float | None,
    ledger: Ledger,
    block_rows: int = ROW_BLOCK,
    method: Method | None = None,
    pause: Pause | None = None,
    on_block: BlockDone | None = None,
) -> Calibrated:
    """Run (or resume) the deduplication of ``gallery`` at ``target_fmr`` (default: one false
    pair expected) into ``ledger``; returns what was calibrated. ``pause`` is called between
    GEMM chunks (the service yields to searches there, or stops)."""
    plan = BlockPlan.of(gallery.labels, block_rows)
    resumed = ledger.resume(gallery.change_seq)
    if resumed is None:
        fmr = target_fmr or one_false_pair_fmr(gallery.vectors.shape[0])
        thresholds = calibrate(gallery.template_format, gallery.vectors, gallery.labels, fmr)
        calibrated = Calibrated(
            gallery.change_seq,
            method or choose_method(gallery.vectors.shape[0]),
            plan.blocks,
            fmr,
            thresholds.match,
            thresholds.possible,
            thresholds.expected_false_pairs,
            thresholds.tail.as_dict(),
        )
        ledger.begin(calibrated)
        resumed = Resumed(calibrated, 0)
    calibrated = resumed.calibrated
    fmt, vectors, labels = gallery.template_format, gallery.vectors, gallery.labels
    shortlist = build_shortlist(fmt, vectors) if calibrated.method == "pq_shortlist" and plan.blocks else None
    for block in range(resumed.blocks_done, plan.blocks):
        threshold = calibrated.possible_threshold
        if shortlist is None:
            found = scan_block(fmt, vectors, labels, plan, block, threshold, pause=pause)
        else:
            if pause is not None:
                pause()
            found = shortlist_block(fmt, vectors, labels, plan, block, threshold, shortlist)
        rows = [
            PairRow(
                gallery.references[a],
                gallery.references[b],
                score,
                "match" if score >= calibrated.match_threshold else "possible",
            )
            for a, b, score in zip(found.left.tolist(), found.right.tolist(), found.scores.tolist(), strict=True)
        ]
        ledger.commit(block + 1, rows)
        if on_block is not None:
            on_block(block + 1, plan)
    return calibrated


def clusters_of(pairs: list[tuple[str, str]]) -> list[list[str]]:
    """Connected components of the pairs, by reference id, each sorted."""
    if not pairs:
        return []
    names, codes = np.unique(np.array(pairs, dtype=object).ravel().astype(str), return_inverse=True)
    codes = codes.reshape(-1, 2)
    return sorted(
        (sorted(str(names[i]) for i in group) for group in clusters(codes[:, 0], codes[:, 1])),
        key=lambda group: group[0],
    )
