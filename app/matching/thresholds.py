"""Decision thresholds per gallery, calibrated on the gallery's own non-mated searches.

For 1:N, leave-one-out searches of enrolled samples give the distribution of the best non-mated
decision score (:class:`matcher.CohortMargin`: a candidate's score minus the mean score of the
probe's cohort) at the gallery's real size and in its model's own score space (see
:func:`matcher.leave_one_out_decision_scores`); the ``match`` threshold is read at the requested
FPIR and the ``possible`` threshold at ten times that. For 1:1, random pairs of different records give
non-mated comparison scores, read at the requested FMR. A sample too small to resolve a rate
yields the most conservative threshold it supports (just above its highest non-mated score), and
says so. Samples are drawn again when the gallery has grown or shrunk by more than a tenth, and
kept in the database (app/matching/calibrations.py), so that every process and node reads the
same thresholds and a restart draws none.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from app.db.locks import database_lock
from app.db.session import Sessions, engine_of
from app.indexes.backends import MatcherIndex
from app.indexes.registry import IndexRegistry
from app.matching import calibrations
from app.matching.calibrations import GalleryCalibration
from app.observability.metrics import Metrics
from matcher import Calibration, CohortMargin, Thresholds, leave_one_out_decision_scores
from matcher.score_fusion import NonmatedTail

POSSIBLE_FACTOR = 10.0
MAX_READ_RATES = 1024
DECISION = CohortMargin()
"""The identification decision statistic of every gallery (its calibration and its candidates)."""
STATISTIC = repr(DECISION)
"""How a stored calibration sample names the statistic it was drawn with."""


@dataclass(frozen=True)
class CalibratedThresholds:
    thresholds: Thresholds
    resolved: bool
    sample_size: int


class ThresholdBook:
    def __init__(
        self,
        registry: IndexRegistry,
        sessions: Sessions,
        metrics: Metrics,
        searches: int = 2000,
        pairs: int = 200_000,
    ) -> None:
        self.registry, self.sessions, self.metrics = registry, sessions, metrics
        self.searches = searches
        self.pairs = pairs
        self._cache: dict[int, GalleryCalibration] = {}
        self._read: dict[tuple[int, str, float], tuple[GalleryCalibration, CalibratedThresholds]] = {}
        self._tails: dict[int, tuple[GalleryCalibration, NonmatedTail]] = {}
        self._lock = threading.Lock()

    def _calibration(self, gallery_id: int) -> GalleryCalibration:
        index = self.registry.get(gallery_id)
        size = index.template_count
        cached = self._cache.get(gallery_id)
        if cached is None or not cached.fits(size):
            with self._lock:
                cached = self._cache.get(gallery_id)
                if cached is None or not cached.fits(size):
                    cached = self._shared(gallery_id, index, size)
                    self._cache[gallery_id] = cached
        return cached

    def _shared(self, gallery_id: int, index: MatcherIndex, size: int) -> GalleryCalibration:
        """The stored sample if it still fits the gallery, else one drawn here and stored. The
        database's lock makes processes starting together wait for the first one's draw rather
        than each draw its own (and answer with thresholds of its own)."""
        with database_lock(engine_of(self.sessions), f"calibration/{gallery_id}"):
            stored = calibrations.load(self.sessions, gallery_id, STATISTIC)
            if stored is not None and stored.fits(size):
                self.metrics.calibrations.labels("stored").inc()
                return stored
            decisions = leave_one_out_decision_scores(DECISION, index.search, *index.sample_templates(self.searches))
            drawn = GalleryCalibration(size, decisions, index.nonmated_pair_scores(self.pairs))
            calibrations.store(self.sessions, gallery_id, STATISTIC, drawn)
            self.metrics.calibrations.labels("drawn").inc()
            return drawn

    def for_identification(self, gallery_id: int, fpir: float) -> CalibratedThresholds:
        """Thresholds on the decision score (not the raw score). ``fpir`` a fraction, as
        :func:`app.matching.rates.rate_from_request` gives it."""
        return self._thresholds(gallery_id, "nonmated_decisions", fpir)

    def nonmated_tail(self, gallery_id: int) -> NonmatedTail:
        """The tail probabilities of the gallery's non-mated decision scores, which fuse it with
        other modalities (matcher/score_fusion.py); fitted once while the sample stands."""
        calibration = self._calibration(gallery_id)
        cached = self._tails.get(gallery_id)
        if cached is None or cached[0] is not calibration:
            cached = (calibration, NonmatedTail.fit(calibration.nonmated_decisions))
            self._tails[gallery_id] = cached
        return cached[1]

    def for_verification(self, gallery_id: int, fmr: float) -> CalibratedThresholds:
        """``fmr`` a fraction, as :func:`app.matching.rates.rate_from_request` gives it."""
        return self._thresholds(gallery_id, "nonmated_pairs", fmr)

    def _thresholds(self, gallery_id: int, sample: str, rate: float) -> CalibratedThresholds:
        """Read once per gallery, sample and rate while the sample stands (reading sorts it):
        clients ask again and again for the same few rates."""
        calibration = self._calibration(gallery_id)
        key = (gallery_id, sample, rate)
        cached = self._read.get(key)
        if cached is None or cached[0] is not calibration:
            cached = (calibration, _read(getattr(calibration, sample), rate))
            if len(self._read) >= MAX_READ_RATES:  # any rate may be asked: bounded, not a leak
                self._read.clear()
            self._read[key] = cached
        return cached[1]


def _read(sample: np.ndarray, rate: float) -> CalibratedThresholds:
    if sample.size == 0:  # an empty gallery: nothing can match
        return CalibratedThresholds(Thresholds(np.inf, np.inf), False, 0)
    calibration = Calibration(sample, POSSIBLE_FACTOR, clamp=True)
    return CalibratedThresholds(calibration.thresholds_at_rate(rate), calibration.resolves(rate), int(sample.size))


class StoredThresholds:
    """Verification thresholds read from the samples the serving processes store, for a process
    without indexes (the case linker's own process, app/passes.py), which cannot draw one. A
    gallery's sample is read again at most every ``refresh_s``: one drawn anew when the gallery
    has drifted replaces the old one here within that time. No stored sample yet: None."""

    def __init__(self, sessions: Sessions, refresh_s: float = 10.0) -> None:
        self.sessions, self.refresh_s = sessions, refresh_s
        self._samples: dict[int, tuple[float, GalleryCalibration | None]] = {}
        self._read: dict[tuple[int, float], tuple[GalleryCalibration, Thresholds]] = {}

    def for_verification(self, gallery_id: int, fmr: float) -> Thresholds | None:
        now = time.monotonic()
        read_at, calibration = self._samples.get(gallery_id, (-math.inf, None))
        if now - read_at > self.refresh_s:
            calibration = calibrations.load(self.sessions, gallery_id, STATISTIC)
            self._samples[gallery_id] = (now, calibration)
        if calibration is None:
            return None
        cached = self._read.get((gallery_id, fmr))
        if cached is None or cached[0] is not calibration:
            cached = (calibration, _read(calibration.nonmated_pairs, fmr).thresholds)
            if len(self._read) >= MAX_READ_RATES:
                self._read.clear()
            self._read[(gallery_id, fmr)] = cached
        return cached[1]
