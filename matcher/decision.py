"""The open-set decision statistic: how far a candidate stands above the probe's own cohort.

A fixed score threshold asks "is this score high?", but how high a non-mated score gets depends
on the probe: some faces (pose, light, a common look) score high against everyone. The records
a probe ranks just below its best ones are, in an open-set gallery, almost all other people; their
scores measure how high this probe scores against strangers. The decision score of a candidate
is therefore its score minus the mean score of that cohort: the cohort normalisation of speaker
and face verification (test normalisation, T-norm: Auckenthaler, Carey & Lloyd-Thomas, "Score
normalization for text-independent speaker verification systems", Digital Signal Processing 10,
2000; cohort scores drawn from the probe's own candidate list: Merati, Poh & Kittler,
"User-specific cohort selection and score normalization for biometric systems", IEEE TIFS 7(4),
2012), kept to its location term; a top-1/top-2 margin is the special case of a one-record cohort
(Lowe's ratio test on nearest and second-nearest neighbours, IJCV 60(2), 2004).

The cohort skips the best other record: when the same person is enrolled twice, under two
reference ids, that record is the runner-up and a pure top-1/top-2 margin closes to nothing;
measured on real faces (benchmarks/real_eval.py --twins) such searches kept their mate with the
skip as often as anyone else's, and lost all but 1 in 40 with the top-1/top-2 margin at FPIR
0.01. The statistic is calibrated like any score: on leave-one-out searches of the gallery's own
templates (:func:`leave_one_out_decision_scores`), never on probes. Those searches assume one
record a person: a duplicated record's search finds its twin, a mate, and raises the thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.fusion import NO_RECORD, SearchResult
from matcher.gallery import Searcher


@dataclass(frozen=True)
class CohortMargin:
    """Decision score = score minus the mean of the probe's other records ranked ``skip + 1`` to
    ``skip + size`` among the others (by default the 3rd to 10th best record for the rank-1
    candidate). With fewer records than that, the cohort is what there is, and at least the best
    other record; a record alone in its gallery has no cohort and no decision score (-inf)."""

    skip: int = 1
    size: int = 8

    def __post_init__(self) -> None:
        if self.skip < 0 or self.size < 1:
            raise ValueError(f"a cohort skips >= 0 records and holds >= 1, got skip={self.skip}, size={self.size}")

    @property
    def depth(self) -> int:
        """How many records a search must return for every candidate's cohort to be complete."""
        return 1 + self.skip + self.size

    def scores(self, result: SearchResult) -> np.ndarray:
        """Decision score of every candidate of every query of ``result`` (same shape as its
        scores; -inf on padding). Non-increasing along a row, as the scores are.

        Vectorised over rows and candidates alike (it runs in every search): a candidate's
        cohort is a window of its row with the candidate itself taken out, so its sum is a
        difference of prefix sums, less the candidate's own score when the window spans it."""
        scores = np.where(result.record_ids == NO_RECORD, -np.inf, result.scores).astype(np.float64)
        finite = np.isfinite(scores)
        clean = np.where(finite, scores, 0.0)
        others = finite.sum(axis=1, keepdims=True) - 1  # a candidate's other records in its row
        start = np.minimum(self.skip, np.maximum(others - 1, 0))
        stop = np.minimum(start + self.size, others)
        column = np.arange(scores.shape[1])[None, :]
        # the window [start, stop) of the row without the candidate, in the row's own positions
        low = np.where(column < start, start + 1, start)
        high = np.where(column < stop, stop + 1, stop)
        prefix = np.concatenate([np.zeros((scores.shape[0], 1)), np.cumsum(clean, axis=1)], axis=1)
        total = np.take_along_axis(prefix, high, axis=1) - np.take_along_axis(prefix, low, axis=1)
        total -= np.where((column >= start) & (column < stop), clean, 0.0)
        count = np.broadcast_to(stop - start, scores.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.inf)
        return np.where(finite, scores - mean, -np.inf)


def leave_one_out_decision_scores(
    statistic: CohortMargin, search: Searcher, own_labels: np.ndarray, probes: np.ndarray
) -> np.ndarray:
    """The best decision score of each leave-one-out search: an enrolled sample searched against
    its gallery with its own record taken out of the candidate list, so that every candidate is
    another person (as far as the gallery knows). These are the gallery's non-mated decision
    scores, from which the threshold at a target FPIR is read (ISO/IEC 19795-1 open-set)."""
    if own_labels.size == 0:
        return np.empty(0, dtype=np.float64)
    result = search(probes, statistic.depth + 1)
    own = result.record_ids == own_labels[:, None]
    keep = ~own
    # drop the own record from each row, keeping the order: shift the rest left
    order = np.argsort(~keep, axis=1, kind="stable")
    rows = np.arange(own_labels.size)[:, None]
    ids = np.where(keep[rows, order], result.record_ids[rows, order], NO_RECORD)[:, : statistic.depth]
    scores = np.where(keep[rows, order], result.scores[rows, order], -np.inf)[:, : statistic.depth]
    best = statistic.scores(SearchResult(ids, scores))[:, 0]
    return best[np.isfinite(best)]
