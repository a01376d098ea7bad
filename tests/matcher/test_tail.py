"""The tail fit reads thresholds at rates no sample reaches, and is not fooled by duplicates."""

import math

import numpy as np
import pytest

from matcher import CalibrationError
from matcher.tail import fit_tail


def gaussian_rate_above(score: float) -> float:
    return 0.5 * math.erfc(score / math.sqrt(2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_at_one_in_a_million_has_about_that_false_match_rate(seed):
    """2M standard normal non-mated scores fitted above their 99.9th percentile: the threshold
    read at FMR 1e-6 (three decades beyond the fitted range) is exceeded, by the exact normal
    law, by a fraction within a factor of three of 1e-6."""
    scores = np.random.default_rng(seed).standard_normal(2_000_000)
    threshold = fit_tail(scores).threshold_at(1e-6)
    assert 1e-6 / 3 < gaussian_rate_above(threshold) < 3e-6


def test_a_few_duplicates_in_the_sample_do_not_raise_the_threshold():
    scores = np.random.default_rng(5).standard_normal(2_000_000)
    clean = fit_tail(scores)
    scores[:20] = np.linspace(9, 12, 20)  # mated pairs, far above every non-mated score
    planted = fit_tail(scores)
    assert planted.outliers == 20
    assert planted.threshold_at(1e-9) == pytest.approx(clean.threshold_at(1e-9), rel=0.02)


def test_rates_above_and_thresholds_are_inverse():
    fit = fit_tail(np.random.default_rng(9).standard_normal(400_000))
    for rate in (1e-4, 1e-7, 1e-10):
        assert fit.rate_above(fit.threshold_at(rate)) == pytest.approx(rate, rel=1e-6)
    assert fit.threshold_at(0.5) == fit.location, "a rate the sample holds is read at its location"


def test_too_small_a_sample_is_refused():
    with pytest.raises(CalibrationError):
        fit_tail(np.arange(10.0))
