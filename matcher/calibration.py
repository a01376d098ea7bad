"""Score thresholds from measured non-mated scores, and decision bands.

No fixed cosine threshold is safe: one face model puts impostor cosines at 0.8-0.9 and mates at
0.95+, another puts impostors near 0 and mates at 0.5+. Thresholds are therefore read off a
sample of non-mated scores of the gallery's own format:

* 1:1 verification: the threshold at a target FMR is the score that a fraction FMR of non-mated
  comparison scores reach.
* 1:N identification: the threshold at a target FPIR is the score that a fraction FPIR of
  non-mated *searches* reach with their best candidate (ISO/IEC 19795-1; NIST FRTE 1:N). When
  only pairwise scores are known, FPIR ≈ 1 - (1 - FMR)^N for a gallery of N records.

Every rate here is a fraction in (0, 1); a client's other notations are read by the service.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from matcher.errors import CalibrationError


class Band(enum.StrEnum):
    """``match``: above the strict threshold; ``possible``: above the loose one. Scores below the
    loose threshold are not candidates at all."""

    MATCH = "match"
    POSSIBLE = "possible"


def check_rate(rate: float) -> float:
    """``rate`` (an FMR or FPIR) as a float, if it is a fraction in (0, 1); raises
    CalibrationError otherwise."""
    if 0.0 < rate < 1.0:
        return float(rate)
    raise CalibrationError(f"a false-positive rate is a fraction in (0, 1), got {rate}")


def fmr_for_fpir(fpir: float, gallery_size: int) -> float:
    """The per-comparison FMR that gives ``fpir`` over a gallery of ``gallery_size`` records,
    assuming independent comparisons: FPIR = 1 - (1 - FMR)^N."""
    if gallery_size < 1:
        return fpir
    return -math.expm1(math.log1p(-fpir) / gallery_size)


def threshold_at_rate(nonmated_scores: npt.ArrayLike, rate: float, *, clamp: bool = False) -> float:
    """The smallest threshold t such that at most a fraction ``rate`` of ``nonmated_scores`` are
    >= t. When the sample is too small to resolve ``rate`` (it must hold at least 1/rate scores)
    this raises CalibrationError, or with ``clamp`` returns the most conservative threshold the
    sample supports: just above its highest score."""
    scores = np.asarray(nonmated_scores).ravel()
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    rate = check_rate(rate)
    if scores.size == 0 or not np.isfinite(scores).all():
        raise CalibrationError("calibration needs a non-empty sample of finite non-mated scores")
    allowed = math.floor(rate * scores.size + 1e-9)
    # nextafter in the scores' own precision: a float32 score compared with a float64 threshold
    # just above it would round back to the score itself (NumPy casts the scalar to float32).
    above = np.asarray(np.inf, dtype=scores.dtype)
    if allowed < 1 and clamp:
        return float(np.nextafter(scores.max(), above))
    if allowed < 1:
        raise CalibrationError(
            f"{scores.size} non-mated scores cannot resolve a rate of {rate:g}: "
            f"at least {math.ceil(1 / rate)} are needed"
        )
    ranked = np.sort(scores)[::-1]
    if allowed >= ranked.size:
        return float(ranked[-1])
    return float(np.nextafter(ranked[allowed], above))


@dataclass(frozen=True)
class Thresholds:
    """A strict (``match``) and a loose (``possible``) score threshold; match >= possible."""

    match: float
    possible: float

    def __post_init__(self) -> None:
        if self.possible > self.match:
            raise CalibrationError("the possible threshold must not exceed the match threshold")

    def band(self, score: float) -> Band | None:
        if score >= self.match:
            return Band.MATCH
        if score >= self.possible:
            return Band.POSSIBLE
        return None


@dataclass(frozen=True)
class Calibration:
    """A sample of non-mated comparison scores of one template format, from which thresholds for
    any FMR or FPIR (at a given gallery size) are read.

    ``possible_factor`` sets how much looser the ``possible`` band is than ``match``: its
    threshold is read at a rate ``possible_factor`` times higher. With ``clamp``, a rate the
    sample cannot resolve gives the most conservative threshold it supports instead of an error.
    The sample may be pairwise comparison scores (read at an FMR) or the best non-mated score of
    each of a set of searches (read directly at an FPIR).
    """

    nonmated_scores: np.ndarray
    possible_factor: float = 10.0
    clamp: bool = False

    def thresholds_at_rate(self, rate: float) -> Thresholds:
        """Match at ``rate`` of the sample, possible at ``possible_factor`` times it."""
        return self._thresholds(check_rate(rate), lambda r: r)

    def thresholds_at_fpir(self, fpir: float, gallery_size: int) -> Thresholds:
        """From pairwise scores: FPIR converted to the per-comparison FMR at ``gallery_size``."""
        return self._thresholds(check_rate(fpir), lambda r: fmr_for_fpir(r, gallery_size))

    def resolves(self, rate: float) -> bool:
        """Whether the sample is large enough to read ``rate`` without clamping."""
        return check_rate(rate) * self.nonmated_scores.size >= 1

    def _thresholds(self, strict: float, to_sample_rate: Callable[[float], float]) -> Thresholds:
        loose = min(strict * self.possible_factor, 0.5)
        return Thresholds(
            match=threshold_at_rate(self.nonmated_scores, to_sample_rate(strict), clamp=self.clamp),
            possible=threshold_at_rate(self.nonmated_scores, to_sample_rate(loose), clamp=self.clamp),
        )
