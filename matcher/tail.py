"""The far tail of non-mated scores, fitted by extreme-value theory, for rates no sample reaches.

A per-comparison FMR is not a per-gallery one: deduplicating n templates makes n(n-1)/2
comparisons, so expecting about one false pair in a 1M gallery needs an FMR near 2e-12, and no
sample of non-mated scores can be read that far (``matcher.calibration`` reads thresholds off
the sample itself, which needs 1/rate scores). Above a high threshold ``u``, the excesses of any
score distribution in the usual domains of attraction follow a generalised Pareto distribution
(Pickands-Balkema-de Haan theorem): ``P(X > u + y | X > u) = (1 + shape * y / scale) ** (-1 / shape)``
(the exponential ``exp(-y / scale)`` when ``shape`` is 0). So the tail is fitted on the
excesses over the sample's own high quantile and read at any rate below it.

The fit is by probability-weighted moments (Hosking & Wallis, "Parameter and quantile estimation
for the generalized Pareto distribution", Technometrics 29(3), 1987): closed-form, no optimiser
(SciPy is not a dependency), and less variable than maximum likelihood for the few hundred to
few thousand excesses a job has. It must be robust to the duplicates a deduplication is looking
for: a sample of the job's own pair scores may hold a few mated pairs, whose scores lie far above
every non-mated one and would make the fitted tail heavy. Excesses beyond ``ln(k / alpha)``
times the excesses' median scale (their median over ln 2, the exponential scale a median gives)
are taken out before the fit: under an exponential tail all k excesses stay below that bound
with probability about ``1 - alpha``, while mated scores, tens of scales above, do not. The
median cannot be moved by a few such outliers, so they cannot hide one another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from matcher.calibration import check_rate
from matcher.errors import CalibrationError

TAIL_FRACTION = 0.001
"""The excesses fitted: the sample's top tenth of a percent (2,000 of a 2M-pair sample)."""
MIN_EXCESSES = 50
"""At least this many excesses are fitted, even if that reaches lower than ``TAIL_FRACTION``."""
MAX_EXCESSES = 10_000
OUTLIER_ALPHA = 0.01
"""Chance that an excess of a genuinely exponential tail is taken for an outlier."""
SHAPE_LIMIT = 0.45
"""The PWM estimator needs shape < 1/2 (a finite variance); a fitted shape beyond this is held
at it."""


@dataclass(frozen=True)
class TailFit:
    """A generalised Pareto tail above ``location`` (``u``): ``exceedance_rate`` of non-mated
    scores exceed ``u``, and their excesses have ``shape`` and ``scale``."""

    location: float
    exceedance_rate: float
    shape: float
    scale: float
    sample_size: int
    excesses: int
    outliers: int
    """Excesses taken out of the fit as outliers (most likely mated pairs)."""

    def rate_above(self, score: float) -> float:
        """The fitted fraction of non-mated scores at or above ``score`` (only meaningful above
        ``location``; below it, the exceedance rate)."""
        excess = max(0.0, score - self.location)
        if abs(self.shape) < 1e-9:
            return self.exceedance_rate * math.exp(-excess / self.scale)
        base = 1.0 + self.shape * excess / self.scale
        if base <= 0.0:  # beyond the upper end point of a bounded tail
            return 0.0
        return self.exceedance_rate * base ** (-1.0 / self.shape)

    def threshold_at(self, rate: float) -> float:
        """The score that a fraction ``rate`` of non-mated scores reach, by the fitted tail."""
        rate = check_rate(rate)
        if rate >= self.exceedance_rate:
            return self.location
        ratio = rate / self.exceedance_rate
        if abs(self.shape) < 1e-9:
            return self.location - self.scale * math.log(ratio)
        return self.location + self.scale / self.shape * (ratio ** (-self.shape) - 1.0)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "location": self.location,
            "exceedance_rate": self.exceedance_rate,
            "shape": self.shape,
            "scale": self.scale,
            "sample_size": self.sample_size,
            "excesses": self.excesses,
            "outliers": self.outliers,
        }


def fit_tail(nonmated_scores: npt.ArrayLike, tail_fraction: float = TAIL_FRACTION) -> TailFit:
    """Fit the tail of ``nonmated_scores`` above their ``1 - tail_fraction`` quantile (at least
    :data:`MIN_EXCESSES` excesses), outliers taken out first (see the module docstring)."""
    scores = np.sort(np.asarray(nonmated_scores, dtype=np.float64).ravel())
    if scores.size < 2 * MIN_EXCESSES or not np.isfinite(scores).all():
        raise CalibrationError(f"a tail fit needs at least {2 * MIN_EXCESSES} finite non-mated scores")
    count = int(np.clip(round(scores.size * tail_fraction), MIN_EXCESSES, MAX_EXCESSES))
    location = float(scores[-count - 1])
    excesses = scores[-count:] - location
    bound = math.log(count / OUTLIER_ALPHA) * float(np.median(excesses)) / math.log(2.0)
    kept = excesses[excesses <= bound] if bound > 0 else excesses
    shape, scale = _pwm(kept)
    return TailFit(
        location=location,
        exceedance_rate=kept.size / (scores.size - (count - kept.size)),
        shape=shape,
        scale=scale,
        sample_size=int(scores.size),
        excesses=int(kept.size),
        outliers=int(count - kept.size),
    )


def _pwm(excesses: np.ndarray) -> tuple[float, float]:
    """(shape, scale) of a generalised Pareto law by probability-weighted moments; ``excesses``
    sorted ascending. Hosking & Wallis's ``k`` is minus the shape used here."""
    k = excesses.size
    plotting = (np.arange(1, k + 1) - 0.35) / k
    a0 = float(excesses.mean())
    a1 = float(np.mean((1.0 - plotting) * excesses))
    if a0 <= 0 or a0 - 2 * a1 <= 0:
        raise CalibrationError("the non-mated scores have no spread in their tail to fit")
    shape = -(a0 / (a0 - 2 * a1) - 2.0)
    shape = min(shape, SHAPE_LIMIT)
    scale = a0 * (1.0 - shape)  # the mean excess is scale / (1 - shape)
    return shape, scale
