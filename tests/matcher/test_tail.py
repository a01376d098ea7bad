"""The tail fit reads thresholds at rates no sample reaches, and is not fooled by duplicates."""

import numpy as np
import pytest

from matcher import CalibrationError
from matcher.tail import MAX_EXCESSES, TopScores, fit_tail
from tests.matcher.random_cosines import rate_above, unit_vectors


@pytest.mark.parametrize("seed", [0, 1])
def test_thresholds_at_1e_8_and_1e_10_have_about_those_false_match_rates(seed):
    """1e8 cosines of random 512-d unit vectors (2,000 rows against 50,000), streamed by GEMM
    chunks with only their top kept, fitted above their 1e-4 quantile: the thresholds read at
    1e-8 and 1e-10 (four to six decades beyond) are exceeded, by the exact law, by a fraction
    within a factor of three of the rate asked for."""
    rng = np.random.default_rng(seed)
    rows, columns = unit_vectors(2000, 512, rng), unit_vectors(50_000, 512, rng)
    top = TopScores()
    for first in range(0, columns.shape[0], 4096):
        top.add(rows @ columns[first : first + 4096].T)
    fit = fit_tail(top.highest(), rows.shape[0] * columns.shape[0], top.centre)
    assert fit.excesses == MAX_EXCESSES // 2
    for rate in (1e-8, 1e-10):
        assert rate / 3 < rate_above(fit.threshold_at(rate)) < 3 * rate


def test_the_top_of_a_stream_is_the_top_of_the_whole():
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal((50, 400)) for _ in range(20)]
    for batch in batches:
        batch[:, ::7] = -np.inf  # scores left out
    top = TopScores(keep=1000)
    for batch in batches:
        top.add(batch)
    whole = np.sort(np.concatenate([b[np.isfinite(b)] for b in batches]))
    assert np.array_equal(top.highest(), whole[-1000:])
    assert top.centre == pytest.approx(0.0, abs=0.1)


def test_a_few_duplicates_in_the_sample_do_not_raise_the_threshold():
    scores = np.random.default_rng(5).standard_normal(20_000_000).astype(np.float32)
    clean = fit_tail(np.sort(scores)[-5000:], scores.size, 0.0)
    scores[:20] = np.linspace(9, 12, 20)  # mated pairs, far above every non-mated score
    planted = fit_tail(np.sort(scores)[-5000:], scores.size, 0.0)
    assert planted.outliers == 20
    assert planted.threshold_at(1e-9) == pytest.approx(clean.threshold_at(1e-9), rel=0.02)


def test_rates_above_and_thresholds_are_inverse():
    scores = np.random.default_rng(9).standard_normal(400_000)
    fit = fit_tail(scores, scores.size, 0.0)
    for rate in (1e-4, 1e-7, 1e-10):
        assert fit.rate_above(fit.threshold_at(rate)) == pytest.approx(rate, rel=1e-6)
    assert fit.threshold_at(0.5) == fit.location, "a rate the sample holds is read at its location"


def test_too_small_a_sample_is_refused():
    with pytest.raises(CalibrationError):
        fit_tail(np.arange(10.0), 10, 0.0)
