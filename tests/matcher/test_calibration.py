import math

import numpy as np
import pytest

from matcher import Band, Calibration, CalibrationError, Thresholds, fmr_for_fpir, threshold_at_rate
from matcher.calibration import check_rate


def test_a_rate_is_a_fraction_and_nothing_else():
    assert check_rate(0.01) == 0.01
    for bad in (0, -0.1, 1.5, float("nan"), 30):  # 30, MOSIP's 0.001, is read by the service
        with pytest.raises(CalibrationError):
            check_rate(bad)
        with pytest.raises(CalibrationError):
            threshold_at_rate(np.arange(1000.0), bad)


@pytest.mark.parametrize("centre", [0.0, 0.85])  # impostors near 0 (ArcFace-like) or at 0.85 (another model)
def test_threshold_at_fmr_holds_on_held_apart_impostor_scores(centre):
    rng = np.random.default_rng(0)
    calibration_scores = rng.normal(centre, 0.03, 200_000)
    held_apart = rng.normal(centre, 0.03, 1_000_000)
    fmr = 0.001
    threshold = threshold_at_rate(calibration_scores, fmr)
    observed = np.mean(held_apart >= threshold)
    # binomial sampling error of the calibration sample: sd = sqrt(fmr (1 - fmr) / n)
    assert abs(observed - fmr) < 4 * math.sqrt(fmr / 200_000) + 4 * math.sqrt(fmr / 1_000_000)
    assert threshold > centre + 2.5 * 0.03


def test_threshold_never_lets_more_than_the_rate_through():
    scores = np.arange(1000, dtype=float)
    threshold = threshold_at_rate(scores, 0.01)
    assert np.sum(scores >= threshold) == 10


def test_too_small_a_sample_is_refused():
    with pytest.raises(CalibrationError, match="at least 10000"):
        threshold_at_rate(np.zeros(500), 0.0001)


def test_fpir_thresholds_scale_with_gallery_size():
    rng = np.random.default_rng(1)
    calibration = Calibration(rng.normal(0, 0.044, 2_000_000))
    small = calibration.thresholds_at_fpir(0.01, gallery_size=100)
    large = calibration.thresholds_at_fpir(0.01, gallery_size=10_000)
    assert large.match > small.match
    assert small.match > small.possible
    assert fmr_for_fpir(0.01, 100) == pytest.approx(1 - 0.99 ** (1 / 100))


def test_bands():
    thresholds = Thresholds(match=0.5, possible=0.3)
    assert thresholds.band(0.6) is Band.MATCH
    assert thresholds.band(0.4) is Band.POSSIBLE
    assert thresholds.band(0.1) is None
    with pytest.raises(CalibrationError):
        Thresholds(match=0.2, possible=0.3)


def test_leave_one_out_nonmated_scores_exclude_the_probes_own_record(face_format, realistic_set):
    from matcher import GalleryIndex

    data = realistic_set
    index = GalleryIndex(face_format)
    index.add(data.gallery_ids, data.gallery)
    scores = index.nonmated_top_scores(1000, seed=3)
    assert scores.size == 1000
    # the best of 20k near-orthogonal impostors: far below a mate, far above a single impostor
    assert 0.1 < np.median(scores) < 0.3 and scores.max() < 0.4
    threshold = threshold_at_rate(scores, 0.01)
    assert np.mean(scores >= threshold) <= 0.01


def test_clamped_threshold_is_above_every_observed_score():
    assert threshold_at_rate(np.array([0.1, 0.3, 0.2]), 0.001, clamp=True) > 0.3
