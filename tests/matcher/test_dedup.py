"""Deduplication in blocks finds the same pairs as scoring every pair, once each."""

import numpy as np
import pytest

from matcher import Metric, TemplateFormat
from matcher.dedup import (
    BlockPlan,
    build_shortlist,
    calibrate,
    clusters,
    contiguous_order,
    nonmated_tail,
    scan_block,
    shortlist_block,
)
from matcher.synthetic import make_synthetic_set
from tests.matcher.random_cosines import rate_above


def planted_gallery(people=3000, twins=40, samples=1, seed=4):
    """``people`` records, ``twins`` of whom are enrolled a second time (a fresh sample) under
    a new record id; returns vectors, labels (record ids) and the planted pairs."""
    data = make_synthetic_set(people, samples, mated_probes=twins, nonmated_probes=1, seed=seed)
    twin_ids = np.arange(people, people + twins)
    vectors = np.vstack([data.gallery, data.mated_probes])
    labels = np.concatenate([data.gallery_ids, twin_ids])
    return vectors, labels, {(int(a), int(b)) for a, b in zip(data.mated_ids, twin_ids, strict=True)}


def every_pair(fmt, vectors, labels, threshold):
    scores = vectors @ vectors.T if fmt.metric is not Metric.L2 else -((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    best: dict[tuple[int, int], float] = {}
    for i, j in zip(*np.nonzero(np.triu(scores >= threshold, k=1)), strict=True):
        a, b = int(labels[i]), int(labels[j])
        if a != b:
            key = (min(a, b), max(a, b))
            best[key] = max(best.get(key, -np.inf), float(scores[i, j]))
    return best


def scanned(fmt, vectors, labels, threshold, block_rows, scan=scan_block, **extra):
    plan = BlockPlan.of(labels, block_rows)
    found: dict[tuple[int, int], float] = {}
    for block in range(plan.blocks):
        pairs = scan(fmt, vectors, labels, plan, block, threshold, **extra)
        for a, b, score in zip(pairs.left.tolist(), pairs.right.tolist(), pairs.scores.tolist(), strict=True):
            assert (a, b) not in found, "each pair once"
            found[(a, b)] = score
    return found


@pytest.mark.parametrize("metric", [Metric.COSINE, Metric.L2])
def test_blocks_find_exactly_the_pairs_of_the_whole_matrix_each_once(metric):
    vectors, labels, planted = planted_gallery(people=700, twins=15, samples=2)
    fmt = TemplateFormat("m", 512, metric)
    threshold = 0.2 if metric is Metric.COSINE else -1.6
    found = scanned(fmt, vectors, labels, threshold, block_rows=100, column_chunk=256)
    expected = every_pair(fmt, vectors, labels, threshold)
    assert found.keys() == expected.keys()
    assert all(found[k] == pytest.approx(expected[k], abs=1e-5) for k in found)
    assert planted <= set(found)


def test_planted_duplicates_are_found_at_a_threshold_expecting_one_false_pair():
    vectors, labels, planted = planted_gallery()
    fmt = TemplateFormat("m", 512)
    n = vectors.shape[0]
    thresholds = calibrate(fmt, vectors, labels, target_fmr=2 / (n * (n - 1)))
    assert thresholds.expected_false_pairs == pytest.approx(1.0, rel=0.01)
    assert thresholds.tail.outliers > 0, "the planted pairs met in the sample are kept out of the fit"
    found = scanned(fmt, vectors, labels, thresholds.match, block_rows=512)
    assert len(planted & set(found)) >= 0.9 * len(planted)
    assert len(set(found) - planted) <= 5


def test_thresholds_have_about_the_false_match_rates_asked_for():
    """20,200 synthetic templates (isotropic: their non-mated cosines follow the law of random
    unit vectors, known exactly), 200 people enrolled twice: fitted on every pair (2e8), the
    thresholds read at 1e-9 and 1e-10 have true FMRs within a factor of three of those."""
    vectors, labels, _ = planted_gallery(people=20_000, twins=200)
    thresholds = calibrate(TemplateFormat("m", 512), vectors, labels, target_fmr=1e-10)
    assert thresholds.tail.sample_size == vectors.shape[0] * (vectors.shape[0] - 1) // 2
    assert thresholds.tail.outliers > 0, "the planted pairs are kept out of the fit"
    assert 1e-10 / 3 < rate_above(thresholds.match) < 3e-10
    assert 1e-9 / 3 < rate_above(thresholds.possible) < 3e-9


def test_a_larger_gallery_is_calibrated_on_sampled_records_against_all_the_others():
    vectors, labels, _ = planted_gallery(people=20_000, twins=200)
    tail = nonmated_tail(TemplateFormat("m", 512), vectors, labels, sample_scores=10_000_000)
    assert tail.sample_size == 2000 * (vectors.shape[0] - 2000), "2,000 records of one sample each"
    assert tail.outliers > 0, "the planted pairs the sample met are kept out of the fit"
    assert 1e-8 / 3 < rate_above(tail.threshold_at(1e-8)) < 3e-8


def test_the_shortlist_path_finds_the_planted_pairs_too():
    vectors, labels, planted = planted_gallery()
    fmt = TemplateFormat("m", 512)
    exact = scanned(fmt, vectors, labels, 0.3, block_rows=512)
    approximate = scanned(
        fmt, vectors, labels, 0.3, block_rows=512, scan=shortlist_block, shortlist=build_shortlist(fmt, vectors)
    )
    assert len(planted & set(exact)) >= 0.9 * len(planted)
    assert set(approximate) == set(exact)


def test_blocks_end_on_record_boundaries_and_records_are_made_contiguous():
    labels = np.array([5, 5, 5, 2, 2, 9, 1, 1])
    plan = BlockPlan.of(labels, block_rows=2)
    assert plan.starts.tolist() == [0, 3, 5, 8]
    assert contiguous_order(labels) is None
    scattered = np.array([1, 2, 1, 3])
    assert scattered[contiguous_order(scattered)].tolist() == [1, 1, 2, 3]


def test_clusters_are_connected_components():
    assert clusters(np.array([4, 1, 2, 8]), np.array([1, 3, 3, 9])) == [[1, 2, 3, 4], [8, 9]]
