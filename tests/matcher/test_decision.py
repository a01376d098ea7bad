import numpy as np
import pytest

from matcher import CohortMargin, GalleryIndex, SearchResult, leave_one_out_decision_scores, threshold_at_rate

NO = -1


def result(ids: list[list[int]], scores: list[list[float]]) -> SearchResult:
    return SearchResult(np.array(ids, dtype=np.int64), np.array(scores, dtype=np.float32))


def test_a_candidates_decision_score_is_its_score_above_the_cohort_below_the_runner_up():
    margin = CohortMargin(skip=1, size=2)
    decisions = margin.scores(result([[1, 2, 3, 4, NO]], [[0.9, 0.5, 0.4, 0.3, -np.inf]]))[0]
    # rank 1: 0.9 - mean(0.4, 0.3); rank 2: 0.5 - mean(0.4, 0.3); rank 3: 0.4 - mean(0.5, 0.3) ...
    assert decisions[:4] == pytest.approx([0.55, 0.15, 0.0, -0.15], abs=1e-6)
    assert decisions[4] == -np.inf
    assert np.all(np.diff(decisions[:4]) <= 0)


def test_short_lists_fall_back_to_the_best_other_record_and_a_lone_record_has_no_decision():
    margin = CohortMargin()
    two = margin.scores(result([[1, 2, NO]], [[0.8, 0.3, -np.inf]]))[0]
    assert two[0] == pytest.approx(0.5) and two[1] == pytest.approx(-0.5)
    assert margin.scores(result([[1, NO]], [[0.8, -np.inf]]))[0][0] == -np.inf


def test_the_same_person_enrolled_twice_keeps_the_decision_a_top_two_margin_loses():
    twins = result([[1, 2, 3, 4, 5]], [[0.95, 0.94, 0.40, 0.38, 0.36]])
    assert CohortMargin(skip=1, size=3).scores(twins)[0][0] == pytest.approx(0.57, abs=1e-6)
    assert CohortMargin(skip=0, size=1).scores(twins)[0][0] == pytest.approx(0.01, abs=1e-6)


def test_a_threshold_from_leave_one_out_searches_holds_its_fpir_on_people_never_enrolled(face_format, realistic_set):
    data = realistic_set
    index = GalleryIndex(face_format)
    index.add(data.gallery_ids, data.gallery)
    margin = CohortMargin()
    own, probes = index.sample_templates(2000, seed=1)
    calibration = leave_one_out_decision_scores(margin, index.search, own, probes)
    assert calibration.size == 2000
    # the own record taken out: no leave-one-out search scores like a mate
    mated = margin.scores(index.search(data.mated_probes, margin.depth))[:, 0]
    assert calibration.max() < np.median(mated)

    threshold = threshold_at_rate(calibration, 0.05)
    nonmated = margin.scores(index.search(data.nonmated_probes, margin.depth))[:, 0]
    # 400 non-mated searches: 20 expected at 5%; 34 is beyond the 99.9% binomial bound
    assert np.sum(nonmated >= threshold) <= 34
    assert np.mean(mated >= threshold) > 0.9
