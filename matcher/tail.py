"""The far tail of non-mated scores, fitted by extreme-value theory, for rates no sample reaches.

A per-comparison FMR is not a per-gallery one: deduplicating n templates makes n(n-1)/2
comparisons, so expecting about one false pair in a 1M gallery needs an FMR near 2e-12, and no
sample of non-mated scores can be read that far (``matcher.calibration`` reads thresholds off
the sample itself, which needs 1/rate scores). Above a high threshold ``u``, the excesses of any
score distribution in the usual domains of attraction follow a generalised Pareto distribution
(Pickands-Balkema-de Haan theorem; Coles, "An Introduction to Statistical Modeling of Extreme
Values", Springer 2001, ch. 4): ``P(X > u + y | X > u) = (1 + shape * y / scale) ** (-1 / shape)``
(the exponential ``exp(-y / scale)`` when ``shape`` is 0). So the tail is fitted on the
excesses over a high quantile of the sample and read at any rate below it.

**A large sample, only its top kept.** The error of the extrapolation grows with the square of
the log-ratio of the rate read to the rate fitted (a shape error ``e`` moves the threshold by
about ``e * ln(ratio) ** 2 / 2`` scales), so the fit sits as deep in the tail as the sample
allows: a caller streams hundreds of millions of scores through :class:`TopScores`, which keeps
only the highest :data:`MAX_EXCESSES` + 1, and the tail is fitted above the ``1 - TAIL_FRACTION``
quantile (1e-4: 20,000 excesses of 2e8 scores) and read two to four decades further.

**On the squared scale.** Non-mated scores of embedding models are close to Gaussian around
their centre (the cosine of two random unit vectors in d dimensions has density proportional to
``(1 - t**2) ** ((d - 3) / 2)``, about ``exp(-d t**2 / 2)``). Such a tail is in the exponential
domain but reaches it slowly: at any level one can sample, its excesses look like a generalised
Pareto law with a negative shape (about ``-1/z**2`` at z standard deviations) that extrapolates
too light a tail, thresholds too low; at 1e-10 from 1e-4 the false matches came out two to five
times too many. The squared distance to the centre of the non-mated scores, ``(s - centre)**2``,
has an exponential tail from moderate levels on, so the fit is made on that scale (choosing the
scale on which the GPD is fitted is discussed by Wadsworth, Tawn & Jonathan, "Accounting for
choice of measurement scale in extreme value modeling", Ann. Appl. Stat. 4(3), 2010); the shape
is still estimated, so a heavier or lighter tail than Gaussian shows in it. On 2e8 cosines of
random 512-d unit vectors the threshold read at 1e-10 had a true rate within a factor 2 of it
over six samples (0.6 to 1.6), where the raw scale gave 2 to 5.

The fit is by probability-weighted moments (Hosking & Wallis, "Parameter and quantile estimation
for the generalized Pareto distribution", Technometrics 29(3), 1987): closed-form, no optimiser
(SciPy is not a dependency). It must be robust to the duplicates a deduplication is looking for:
the sample of the job's own pair scores holds mated pairs (at a duplicate rate d, at most about
d times the rows sampled of them among hundreds of millions of scores), whose scores lie far
above every non-mated one and would make the fitted tail heavy. Excesses beyond ``ln(k / alpha)``
times the excesses' median scale (their median over ln 2, the exponential scale a median gives)
are taken out before the fit: under an exponential tail all k excesses stay below that bound
with probability about ``1 - alpha``, while mated scores, tens of scales above, do not. The
median cannot be moved by a few such outliers, so they cannot hide one another; a mated score
low enough to stay below the bound is one of a few among 20,000 excesses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from matcher.calibration import check_rate
from matcher.errors import CalibrationError

TAIL_FRACTION = 1e-4
"""The excesses fitted: the sample's top hundredth of a percent (20,000 of a 2e8-score sample)."""
MIN_EXCESSES = 50
"""At least this many excesses are fitted, even if that reaches lower than ``TAIL_FRACTION``."""
MAX_EXCESSES = 20_000
"""At most this many: the PWM shape estimate's standard error is then about 0.01."""
OUTLIER_ALPHA = 0.01
"""Chance that an excess of a genuinely exponential tail is taken for an outlier."""
SHAPE_LIMIT = 0.45
"""The PWM estimator needs shape < 1/2 (a finite variance); a fitted shape beyond this is held
at it."""


class TopScores:
    """The highest ``keep`` scores of a stream and the centre of its first batch, in O(keep)
    memory: what :func:`fit_tail` needs of a sample too large to hold."""

    def __init__(self, keep: int = MAX_EXCESSES + 1) -> None:
        self.keep = keep
        self.centre: float | None = None
        self._floor = -math.inf
        self._parts: list[np.ndarray] = []
        self._held = 0

    def add(self, scores: np.ndarray) -> None:
        """Take in a batch (``-inf`` marks a score to leave out). The first batch's median is the
        centre of the non-mated scores: random pairs, so any batch is as good as the whole."""
        if self.centre is None:
            finite = scores[np.isfinite(scores)]
            if finite.size:
                self.centre = float(np.median(finite[:: max(1, finite.size // 100_000)]))
        above = scores[scores > self._floor]
        self._parts.append(above.astype(np.float64))
        self._held += above.size
        if self._held >= 2 * self.keep:
            self._trim()

    def highest(self) -> np.ndarray:
        """The highest scores taken in, ascending."""
        self._trim()
        return np.sort(self._parts[0]) if self._parts else np.empty(0)

    def _trim(self) -> None:
        held = np.concatenate(self._parts) if self._parts else np.empty(0)
        if held.size > self.keep:
            held = np.partition(held, held.size - self.keep)[-self.keep :]
            self._floor = float(held.min())
        self._parts, self._held = [held], held.size


@dataclass(frozen=True)
class TailFit:
    """A generalised Pareto tail of the squared distances ``(score - centre)**2`` above that of
    ``location`` (``u``): ``exceedance_rate`` of non-mated scores exceed ``u``, and the excesses
    of their squared distances have ``shape`` and ``scale``."""

    location: float
    exceedance_rate: float
    shape: float
    scale: float
    sample_size: int
    excesses: int
    outliers: int
    """Excesses taken out of the fit as outliers (most likely mated pairs)."""
    centre: float

    def rate_above(self, score: float) -> float:
        """The fitted fraction of non-mated scores at or above ``score`` (only meaningful above
        ``location``; below it, the exceedance rate)."""
        excess = max(0.0, (score - self.centre) ** 2 - (self.location - self.centre) ** 2)
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
            excess = -self.scale * math.log(ratio)
        else:
            excess = self.scale / self.shape * (ratio ** (-self.shape) - 1.0)
        return self.centre + math.sqrt((self.location - self.centre) ** 2 + excess)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "location": self.location,
            "exceedance_rate": self.exceedance_rate,
            "shape": self.shape,
            "scale": self.scale,
            "sample_size": self.sample_size,
            "excesses": self.excesses,
            "outliers": self.outliers,
            "centre": self.centre,
        }


def fit_tail(
    highest_scores: npt.ArrayLike, sample_size: int, centre: float, tail_fraction: float = TAIL_FRACTION
) -> TailFit:
    """Fit the tail of a sample of ``sample_size`` non-mated scores centred on ``centre`` from its
    highest scores (:class:`TopScores`, or the whole sample), above its ``1 - tail_fraction``
    quantile (at least :data:`MIN_EXCESSES` excesses), outliers taken out first (see the module
    docstring)."""
    scores = np.sort(np.asarray(highest_scores, dtype=np.float64).ravel())
    if sample_size < 2 * MIN_EXCESSES or scores.size <= MIN_EXCESSES or not np.isfinite(scores).all():
        raise CalibrationError(f"a tail fit needs at least {2 * MIN_EXCESSES} finite non-mated scores")
    count = int(np.clip(round(sample_size * tail_fraction), MIN_EXCESSES, min(MAX_EXCESSES, scores.size - 1)))
    location = float(scores[-count - 1])
    if location <= centre:
        raise CalibrationError("the non-mated scores' tail does not lie above their centre")
    squared = _squared(scores[-count:], centre)
    excesses = squared - (location - centre) ** 2
    bound = math.log(count / OUTLIER_ALPHA) * float(np.median(excesses)) / math.log(2.0)
    kept = excesses[excesses <= bound] if bound > 0 else excesses
    shape, scale = _pwm(kept)
    return TailFit(
        location=location,
        exceedance_rate=kept.size / (sample_size - (count - kept.size)),
        shape=shape,
        scale=scale,
        sample_size=int(sample_size),
        excesses=int(kept.size),
        outliers=int(count - kept.size),
        centre=centre,
    )


def _squared(scores: npt.ArrayLike, centre: float) -> npt.NDArray[np.float64]:
    """The scale the tail is fitted on (see the module docstring); increasing above ``centre``."""
    return (np.asarray(scores, dtype=np.float64) - centre) ** 2


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
