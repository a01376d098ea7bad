"""Score-level fusion of several modalities per person, calibrated on each gallery's own
non-mated searches.

Each modality's decision score lives on its own scale (a face model's cohort margins and a
fingerprint model's differ in location, spread and tail), so scores are not added as they are.
Each is first mapped to its **non-mated tail probability** in its own gallery: the fraction of
that gallery's leave-one-out non-mated searches whose best decision score reaches it (the
sample the gallery's single-modality thresholds are read from, :mod:`app.matching.thresholds`).
A person's fused score is the sum over modalities of ``-log`` of those probabilities: the
statistic of Fisher's method for combining independent tests (R. A. Fisher, *Statistical
Methods for Research Workers*, 1925, §21.1), and the log of a product of non-mated likelihoods,
the form score-level fusion takes under independence of the modalities' non-mated scores
(Nandakumar, Chen, Dass & Jain, "Likelihood ratio-based biometric score fusion", IEEE TPAMI
30(2), 2008; OpenBR's score fusion normalises each algorithm's scores before combining them
likewise). A modality a person is not found in (not enrolled, or below the modality's list)
contributes nothing: a person enrolled by face only is ranked on the face.

The tail is smoothed so that no probability is zero, and so that its extreme part does not rest
on the sample's two or three highest scores (whose chance positions would move a threshold read
there by a factor of 2): below the sample's top twentieth it is ``(c + 1) / (n + 1)``, ``c`` of the
``n`` non-mated scores reaching the score (a valid, slightly conservative p-value); over the top
twentieth, from the score ``u`` just below it, it is ``(k + 1) / (n + 1) * exp(-(s - u) / beta)``,
``k`` the scores above ``u``: the peaks-over-threshold estimate with a generalised Pareto tail of
shape 0 (Pickands-Balkema-de Haan: the excesses of a maximum-type, light-tailed score over a high
threshold are exponential), ``beta`` the mean excess over ``u``. It extends beyond the sample's
maximum, where the empirical tail would say 0. A sample too small to fit it (fewer than
``MIN_TAIL_SCORES`` scores above ``u``) stops at ``1 / (n + 1)``: it cannot tell more.

The fused threshold is read at the requested FPIR on fused non-mated searches. By construction
the best non-mated score of one modality maps to a uniform tail probability (the probability
integral transform), so ``-log`` of it is exponential with mean 1; and in a gallery of thousands
the best non-mated person of one modality is, but for chance, not among the best of another, so
the best fused score of a non-mated search is the *maximum* over modalities of independent
exponential draws, not their sum (the sum would set the threshold several times too high: at
FPIR 0.001 with two modalities, a fifth of the target or less). Hence the closed form
``P(max >= t) = 1 - (1 - exp(-t))^M`` solved for ``t``; it equals what combining independent
draws of each modality's non-mated sample gives (tests/matcher/test_score_fusion.py checks
both), without the sampling noise, and benchmarks/fusion_bench.py measures the FPIR it achieves
on held-out non-mated searches of linked two-modality galleries. ``M`` counts the modalities
searched for the person's country: it is a property of the search, the same for a person found
in one modality as for one found in all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from matcher.calibration import check_rate

TAIL_FRACTION = 0.05
"""The share of the non-mated sample (its highest scores) the exponential tail is fitted on: the
best non-mated score of a large gallery's search has a tail a little lighter than exponential,
so a fit lower down overstates the far tail (benchmarks/fusion_bench.py at 20,000 people: a
tenth gave a third of the target FPIR, a twentieth 0.6 of it)."""
MIN_TAIL_SCORES = 10
"""Fewer exceedances than this fit no tail."""


@dataclass(frozen=True)
class NonmatedTail:
    """The smoothed survival function of one gallery's best non-mated decision scores."""

    sorted_scores: np.ndarray
    """The non-mated sample, ascending (finite)."""
    tail_start: float
    """``u``: above it the fitted exponential tail holds (the sample's maximum when none is fitted)."""
    tail_weight: float
    """The tail probability at ``u``."""
    tail_scale: float
    """``beta`` of the exponential tail; 0: none fitted, the probability stays at ``tail_weight``."""

    @classmethod
    def fit(cls, nonmated_best: np.ndarray) -> NonmatedTail:
        """From the best decision score of each of a gallery's non-mated (leave-one-out) searches."""
        scores = np.sort(np.asarray(nonmated_best, dtype=np.float64).ravel())
        scores = scores[np.isfinite(scores)]
        n = scores.size
        exceedances = max(MIN_TAIL_SCORES, int(TAIL_FRACTION * n))
        if n <= exceedances:
            return cls(scores, float(scores[-1]) if n else math.inf, 1 / (n + 1), 0.0)
        start = float(scores[-exceedances - 1])
        scale = float(np.mean(scores[-exceedances:] - start))
        return cls(scores, start, (exceedances + 1) / (n + 1), scale)

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """Per score, the probability that a non-mated search's best score reaches it, never 0;
        1 for a gallery without calibration and for a score without a cohort (-inf)."""
        scores = np.asarray(scores, dtype=np.float64)
        n = self.sorted_scores.size
        if n == 0:
            return np.ones_like(scores)
        reaching = n - np.searchsorted(self.sorted_scores, scores, side="left")
        inside = (reaching + 1.0) / (n + 1.0)
        excess = np.maximum(scores - self.tail_start, 0.0)
        decay = np.exp(-excess / self.tail_scale) if self.tail_scale > 0 else np.ones_like(scores)
        return np.where(scores > self.tail_start, self.tail_weight * decay, inside)

    def evidence(self, scores: np.ndarray) -> np.ndarray:
        """``-log`` of the tail probability: 0 for a score every non-mated search reaches,
        growing as the score leaves the non-mated distribution behind."""
        return -np.log(self.probability(scores))


def fused_threshold(fpir: float, modalities: int) -> float:
    """The fused score a fraction ``fpir`` of non-mated searches of ``modalities`` modalities
    reach with their best person (see the module docstring): ``t`` with
    ``1 - (1 - exp(-t))^M = fpir``."""
    fpir = check_rate(fpir)
    if modalities < 1:
        raise ValueError(f"a fused search has at least one modality, got {modalities}")
    per_modality = -math.expm1(math.log1p(-fpir) / modalities)
    return -math.log(per_modality)


def fuse_people(people: Sequence[np.ndarray], evidence: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per person, the sum of the evidence of every modality the person was found in.

    ``people[m]`` (int64, each person once) and ``evidence[m]`` hold modality ``m``'s candidates;
    returns the people found in any modality and their fused scores, best first (ties by person
    id, so that the order is deterministic)."""
    if not people:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    everyone, position = np.unique(np.concatenate(people).astype(np.int64), return_inverse=True)
    fused = np.bincount(position, weights=np.concatenate(evidence).astype(np.float64), minlength=everyone.size)
    order = np.lexsort((everyone, -fused))
    return everyone[order], fused[order]


def fuse_rows(
    record_ids: Sequence[np.ndarray], decisions: Sequence[np.ndarray], tails: Sequence[NonmatedTail]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fuse the candidate lists of a batch of searches, one ``(q, k)`` array of record ids (-1:
    none) and of decision scores per modality, the records of every modality labelled by the
    same person ids: per search, its people and fused scores, best first."""
    fused = []
    for query in range(record_ids[0].shape[0]):
        people, evidence = [], []
        for ids, scores, tail in zip(record_ids, decisions, tails, strict=True):
            found = ids[query] >= 0
            people.append(ids[query][found])
            evidence.append(tail.evidence(scores[query][found]))
        fused.append(fuse_people(people, evidence))
    return fused
