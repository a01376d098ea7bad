import numpy as np
import pytest

from matcher.evaluation import (
    cmc,
    det_curve,
    fnir_at_fpir,
    mate_ranks,
    mate_scores,
    rank_k_identification_rate,
    recall_against_exact,
)
from matcher.synthetic import FaceModel, make_synthetic_set, pair_scores, summarise_scores


def test_ranks_cmc_and_identification_rate():
    ids = np.array([[5, 1, 2], [3, 5, 9], [7, 8, 4]])
    mates = np.array([5, 5, 1])
    ranks = mate_ranks(ids, mates)
    assert list(ranks) == [1, 2, 0]
    assert list(cmc(ranks, 3)) == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert rank_k_identification_rate(ranks, 1) == pytest.approx(1 / 3)


def test_fnir_at_fpir_counts_missing_mates_and_threshold():
    mated_ids = np.array([[1, 9], [2, 9], [9, 3], [8, 9]])
    mated_score_grid = np.array([[0.9, 0.1], [0.4, 0.1], [0.2, 0.8], [0.7, 0.1]])
    mates = np.array([1, 2, 3, 4])
    scores = mate_scores(mated_ids, mated_score_grid, mates)
    ranks = mate_ranks(mated_ids, mates)
    nonmated_top = np.linspace(0, 0.5, 100)  # 1% of non-mated searches reach 0.5
    result = fnir_at_fpir(scores, ranks, nonmated_top, fpir=0.01)
    # mate 1: hit; mate 2: 0.4 < threshold; mate 3: rank 2; mate 4: absent
    assert result.fnir == pytest.approx(0.75)
    fpir, fnir = det_curve(scores, ranks, nonmated_top)
    assert fpir[0] == pytest.approx(0.01) and fnir[0] == pytest.approx(0.75)
    assert np.all(np.diff(fpir) >= 0)


def test_recall_against_exact():
    exact = np.array([[1, 2, -1], [3, 4, 5]])
    approx = np.array([[2, 1, -1], [3, 9, 5]])
    assert recall_against_exact(approx, exact) == pytest.approx(4 / 5)


@pytest.mark.parametrize("decay", [0.0, 0.3])
def test_synthetic_scores_follow_published_arcface_figures(decay):
    data = make_synthetic_set(5_000, 2, 2_000, 2_000, FaceModel(spectrum_decay=decay), seed=11)
    summary = summarise_scores(*pair_scores(data))
    assert abs(summary.nonmated_mean) < 0.01
    assert 0.03 < summary.nonmated_std < 0.08
    assert 0.5 < summary.mated_mean < 0.7
    assert 0.08 < summary.mated_std < 0.16
    assert data.gallery.shape == (10_000, 512)
    np.testing.assert_allclose(np.linalg.norm(data.gallery, axis=1), 1.0, rtol=1e-5)
