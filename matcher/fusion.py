"""Per-record fusion of per-template search results.

A record has several samples and a search has several probe samples of the same person; the
answer a reviewer needs is one line per person, scored by the best pair (max fusion, the usual
rule in multi-sample biometric identification). Ties are broken by record id so that results are
deterministic and comparable across backends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_RECORD = -1


@dataclass(frozen=True)
class SearchResult:
    """Top-k records per query: ``record_ids`` (q, k) int64 padded with -1, ``scores`` (q, k)
    float32 padded with -inf, best first. ``missing_shards`` names the shards of a sharded
    gallery that did not answer, when the caller accepted partial results; it is empty
    otherwise."""

    record_ids: np.ndarray
    scores: np.ndarray
    missing_shards: tuple[int, ...] = ()

    def candidates(self, query: int) -> list[tuple[int, float]]:
        """The (record id, score) pairs of one query, without padding."""
        ids, scores = self.record_ids[query], self.scores[query]
        keep = ids != NO_RECORD
        return [(int(r), float(s)) for r, s in zip(ids[keep], scores[keep], strict=True)]


def fuse_per_record(
    row_labels: np.ndarray,
    row_scores: np.ndarray,
    groups: np.ndarray,
    n_queries: int,
    k: int,
    unique_labels: bool = False,
) -> SearchResult:
    """Collapse per-probe, per-template hits into the top ``k`` records of each query.

    ``row_labels``/``row_scores`` are (probes, hits) arrays, labels being record ids (-1 for no
    hit); ``groups[i]`` is the query that probe ``i`` belongs to. ``unique_labels`` says that no
    record appears twice in a row (one sample per record): with one probe per query there is
    then nothing to fuse, and all rows are ranked at once.
    """
    if unique_labels and n_queries == row_labels.shape[0] and np.array_equal(groups, np.arange(n_queries)):
        return rank_rows(row_labels, row_scores, k)
    out_ids = np.full((n_queries, k), NO_RECORD, dtype=np.int64)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n_queries + 1))
    for query in range(n_queries):
        probes = order[bounds[query] : bounds[query + 1]]
        labels = row_labels[probes].ravel()
        scores = row_scores[probes].ravel()
        hit = labels != NO_RECORD
        labels, scores = labels[hit], scores[hit]
        if labels.size == 0:
            continue
        by_record = np.lexsort((-scores, labels))
        labels, scores = labels[by_record], scores[by_record]
        best = np.empty(labels.size, dtype=bool)
        best[0] = True
        np.not_equal(labels[1:], labels[:-1], out=best[1:])
        labels, scores = labels[best], scores[best]
        ranked = np.lexsort((labels, -scores))[:k]
        out_ids[query, : ranked.size] = labels[ranked]
        out_scores[query, : ranked.size] = scores[ranked]
    return SearchResult(record_ids=out_ids, scores=out_scores)


def rank_rows(row_labels: np.ndarray, row_scores: np.ndarray, k: int) -> SearchResult:
    """Best ``k`` hits of every row, score descending then record id ascending.

    A wide row (a 1000-long shortlist for k = 30) is first cut, in linear time, to the ``m``
    best scores, ``m`` being the most hits any row has at or above its own k-th best score: every
    hit the full order would put in the top ``k``, ties included, is kept, so the sort of what
    remains gives the same answer as a sort of everything.
    """
    if row_scores.shape[1] > 4 * k:
        kth = np.partition(row_scores, -k, axis=1)[:, -k, None]
        keep = int((row_scores >= kth).sum(axis=1).max())
        cut = np.argpartition(-row_scores, keep - 1, axis=1)[:, :keep]
        row_labels = np.take_along_axis(row_labels, cut, axis=1)
        row_scores = np.take_along_axis(row_scores, cut, axis=1)
    order = np.lexsort((row_labels, -row_scores), axis=-1)[:, :k]
    ids = np.take_along_axis(row_labels, order, axis=1)
    scores = np.take_along_axis(row_scores, order, axis=1).astype(np.float32, copy=False)
    ids = np.where(np.isfinite(scores), ids, NO_RECORD)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=NO_RECORD)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return SearchResult(record_ids=ids, scores=scores)
