"""Identification accuracy in the ISO/IEC 19795-1 and NIST FRTE 1:N conventions.

Open-set: a mated search is one whose person is enrolled, a non-mated search one whose person is
not. FNIR(T) is the fraction of mated searches whose mate is not returned with a score >= T (at
rank <= R); FPIR(T) is the fraction of non-mated searches that return any candidate >= T. FNIR is
reported at the threshold that gives a target FPIR on the non-mated searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.calibration import threshold_at_rate


def mate_ranks(result_ids: np.ndarray, mate_ids: np.ndarray) -> np.ndarray:
    """1-based rank of each query's mate in its candidate list, 0 when the mate is absent."""
    hit = result_ids == mate_ids[:, None]
    found = hit.any(axis=1)
    return np.where(found, hit.argmax(axis=1) + 1, 0)


def mate_scores(result_ids: np.ndarray, result_scores: np.ndarray, mate_ids: np.ndarray) -> np.ndarray:
    """Score of each query's mate in its candidate list, -inf when the mate is absent."""
    hit = result_ids == mate_ids[:, None]
    return np.where(hit.any(axis=1), np.where(hit, result_scores, -np.inf).max(axis=1), -np.inf)


def cmc(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """Cumulative match characteristic: entry r-1 is the rank-r identification rate."""
    found = ranks[ranks > 0]
    counts = np.bincount(found, minlength=max_rank + 1)[1 : max_rank + 1]
    return np.cumsum(counts) / max(len(ranks), 1)


def rank_k_identification_rate(ranks: np.ndarray, k: int) -> float:
    """Fraction of mated searches whose mate is at rank k or better."""
    return float(np.mean((ranks > 0) & (ranks <= k))) if len(ranks) else 0.0


def fnir_at_threshold(mated_scores_: np.ndarray, mated_ranks: np.ndarray, threshold: float, rank: int) -> float:
    """FNIR(T, R): fraction of mated searches whose mate is missing, ranked below R, or under T."""
    hit = (mated_ranks > 0) & (mated_ranks <= rank) & (mated_scores_ >= threshold)
    return float(1.0 - np.mean(hit))


@dataclass(frozen=True)
class FnirAtFpir:
    fpir: float
    threshold: float
    fnir: float


def fnir_at_fpir(
    mated_scores_: np.ndarray,
    mated_ranks: np.ndarray,
    nonmated_top_scores: np.ndarray,
    fpir: float,
    rank: int = 1,
) -> FnirAtFpir:
    """FNIR at the threshold giving ``fpir`` on the non-mated searches' best scores."""
    threshold = threshold_at_rate(nonmated_top_scores, fpir)
    return FnirAtFpir(fpir, threshold, fnir_at_threshold(mated_scores_, mated_ranks, threshold, rank))


def det_curve(
    mated_scores_: np.ndarray, mated_ranks: np.ndarray, nonmated_top_scores: np.ndarray, rank: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(FPIR, FNIR) pairs over every threshold the non-mated scores allow, for a DET plot."""
    thresholds = np.unique(nonmated_top_scores[np.isfinite(nonmated_top_scores)])[::-1]
    fpir = np.array([np.mean(nonmated_top_scores >= t) for t in thresholds])
    fnir = np.array([fnir_at_threshold(mated_scores_, mated_ranks, t, rank) for t in thresholds])
    return fpir, fnir


def recall_against_exact(approximate_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Fraction of the exact top-k records (ignoring padding) that the approximate search found."""
    total = found = 0
    for approx_row, exact_row in zip(approximate_ids, exact_ids, strict=True):
        wanted = exact_row[exact_row >= 0]
        total += wanted.size
        found += np.isin(wanted, approx_row).sum()
    return found / total if total else 1.0
