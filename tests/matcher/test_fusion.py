"""Ranking hits: score descending, then record id, ties included, whatever the row width."""

import numpy as np

from matcher.fusion import NO_RECORD, rank_rows


def test_wide_rows_rank_exactly_as_a_full_sort_ties_and_padding_included() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        queries, width, k = int(rng.integers(1, 5)), int(rng.integers(1, 3000)), int(rng.integers(1, 60))
        scores = rng.integers(0, 20, (queries, width)).astype(np.float32)  # many equal scores
        scores[rng.random((queries, width)) < 0.1] = -np.inf  # no hit
        labels = rng.integers(0, 10**6, (queries, width))
        ranked = rank_rows(labels, scores, k)

        order = np.lexsort((labels, -scores), axis=-1)[:, :k]
        expected_scores = np.take_along_axis(scores, order, axis=1)
        expected_ids = np.where(np.isfinite(expected_scores), np.take_along_axis(labels, order, axis=1), NO_RECORD)
        assert ranked.record_ids.shape == (queries, k)
        assert np.array_equal(ranked.record_ids[:, : order.shape[1]], expected_ids)
        assert np.array_equal(ranked.scores[:, : order.shape[1]], expected_scores)
        assert (ranked.record_ids[:, order.shape[1] :] == NO_RECORD).all()
