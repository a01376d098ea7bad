"""Score fusion across modalities: the tail probabilities, the fused threshold and the ranking."""

from __future__ import annotations

import numpy as np
import pytest

from matcher import CohortMargin, GalleryIndex, Metric, TemplateFormat, leave_one_out_decision_scores
from matcher.score_fusion import NonmatedTail, fuse_people, fuse_rows, fused_threshold
from matcher.synthetic import FaceModel, make_linked_sets

DECISION = CohortMargin()


def test_tail_probability_falls_as_the_score_rises_and_is_never_zero() -> None:
    sample = np.random.default_rng(0).gumbel(size=2000)
    tail = NonmatedTail.fit(sample)
    scores = np.linspace(sample.min() - 1, sample.max() + 20, 5000)
    probability = tail.probability(scores)
    assert np.all(np.diff(probability) <= 0)
    assert probability[0] == 1.0
    assert np.all(probability > 0)
    assert tail.probability(np.array([sample.max()]))[0] < 1 / 2001  # the fitted tail, not the empirical one
    assert np.all(np.diff(tail.evidence(scores)) >= 0)


def test_a_score_without_cohort_or_an_uncalibrated_gallery_is_no_evidence() -> None:
    assert NonmatedTail.fit(np.random.default_rng(0).normal(size=100)).evidence(np.array([-np.inf]))[0] == 0
    assert NonmatedTail.fit(np.empty(0)).evidence(np.array([5.0]))[0] == 0


def test_a_sample_too_small_for_a_tail_tells_no_more_than_its_size() -> None:
    tail = NonmatedTail.fit(np.arange(5.0))
    assert tail.probability(np.array([100.0]))[0] == pytest.approx(1 / 6)


def test_tail_probabilities_of_fresh_non_mated_scores_are_uniform_beyond_the_sample_too() -> None:
    """The probability integral transform the fused threshold rests on, checked where it matters:
    the tail beyond the calibration sample's maximum."""
    rng = np.random.default_rng(1)
    tail = NonmatedTail.fit(rng.gumbel(size=2000))
    fresh = tail.probability(rng.gumbel(size=400_000))
    for rate in (0.1, 0.01, 0.001, 0.0002):
        assert rate / 2 <= np.mean(fresh <= rate) <= rate * 2


def test_the_closed_form_threshold_is_what_independent_non_mated_draws_of_each_modality_give() -> None:
    """Two modalities of very different non-mated distributions, each calibrated on its own
    sample; fresh independent draws of each, combined as a non-mated search combines them."""
    rng = np.random.default_rng(2)
    draw = [lambda size: rng.gumbel(size=size), lambda size: rng.normal(3.0, 0.2, size=size)]
    tails = [NonmatedTail.fit(sample(3000)) for sample in draw]
    fused_null = np.max([tail.evidence(sample(400_000)) for tail, sample in zip(tails, draw, strict=True)], axis=0)
    for fpir in (0.01, 0.002):
        achieved = np.mean(fused_null >= fused_threshold(fpir, 2))
        assert fpir / 2 <= achieved <= fpir * 1.25  # the exponential tail is conservative for a lighter one
    assert fused_threshold(0.001, 1) == pytest.approx(-np.log(0.001))


def test_a_person_found_in_both_modalities_outranks_one_found_in_one() -> None:
    people, fused = fuse_people(
        [np.array([7, 3]), np.array([3, 9])],
        [np.array([4.0, 3.0]), np.array([2.0, 1.0])],
    )
    assert people.tolist() == [3, 7, 9]
    assert fused.tolist() == [5.0, 4.0, 1.0]


def test_the_fused_threshold_achieves_its_fpir_on_held_out_non_mated_searches() -> None:
    """Two linked galleries with different score distributions, calibrated on their own
    leave-one-out searches like the service; held-out people not enrolled, searched in both."""
    models = [
        FaceModel(dimension=64, spread_median=1.0),
        FaceModel(dimension=48, spread_median=0.9, spectrum_decay=0.4),
    ]
    sets = make_linked_sets(2000, models, mated_probes=500, nonmated_probes=20_000, seed=3)
    fpir = 0.01
    rows, tails = [], []
    for data in sets:
        index = GalleryIndex(TemplateFormat("m", data.gallery.shape[1], Metric.COSINE))
        index.add(data.gallery_ids, data.gallery)
        tails.append(
            NonmatedTail.fit(leave_one_out_decision_scores(DECISION, index.search, *index.sample_templates(2000)))
        )
        result = index.search(np.vstack([data.mated_probes, data.nonmated_probes]), k=DECISION.depth + 20)
        rows.append((result.record_ids, DECISION.scores(result)))
    fused = fuse_rows([ids for ids, _ in rows], [scores for _, scores in rows], tails)
    threshold = fused_threshold(fpir, 2)
    mated = sets[0].mated_ids
    nonmated_best = np.array([scores[0] for _, scores in fused[mated.size :]])
    achieved = np.mean(nonmated_best >= threshold)
    assert fpir / 2 <= achieved <= fpir * 2
    found = [
        np.any((people == mate) & (scores >= threshold))
        for mate, (people, scores) in zip(mated, fused[: mated.size], strict=True)
    ]
    alone = [
        np.mean(
            tail.probability(np.where(ids[: mated.size] == mated[:, None], scores[: mated.size], -np.inf).max(axis=1))
            <= fpir
        )
        for (ids, scores), tail in zip(rows, tails, strict=True)
    ]
    assert np.mean(found) > max(alone) + 0.05  # fewer mates missed than by either modality alone at the same FPIR
