"""The thread that links cases after their identifications (app/cases/links.py).

Off the identification's path: a search is answered first, and compared with the other cases'
probes afterwards, here. It is woken after each batch of searches, and otherwise looks every
``poll_s`` for finished searches not yet compared (those another process ran, or that a stop
interrupted); the database remembers which were, so each is compared once. Of the processes and
nodes of one database, only the one that leads (app/db/locks.py ``Leadership``) runs passes:
each pass decrypts every new search's probes and compares them with every stored one, work that
several processes would all do for every search, then queue on each other's rows to store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.cases.links import ProbeBook, ThresholdsOf, link_pending
from app.db.session import Sessions
from app.observability.metrics import PassesMetrics

log = logging.getLogger(__name__)

MIN_PASS_S = 0.5
"""Passes come no closer than this: under load, a pass after every batch would compare a few
searches at a time and read the database each time, where a pass every half second compares all
that ended meanwhile in one matrix product."""


class CaseLinker:
    def __init__(
        self,
        sessions: Sessions,
        read_sessions: Sessions,
        thresholds_of: ThresholdsOf,
        poll_s: float,
        metrics: PassesMetrics,
        leading: Callable[[], bool],
    ) -> None:
        """``leading``: whether this process runs the passes now (it may change)."""
        self.sessions, self.read_sessions, self.thresholds_of = sessions, read_sessions, thresholds_of
        self.poll_s, self.metrics, self._leading = poll_s, metrics, leading
        self._book = ProbeBook()
        self._passing = threading.Lock()  # one pass at a time over the book
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="case-linker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_once(self) -> int:
        """Compare the finished searches not yet compared; returns how many links were made."""
        with self._passing:
            made, more = link_pending(self.sessions, self.read_sessions, self._book, self.thresholds_of)
            while more and not self._stop.is_set():
                found, more = link_pending(self.sessions, self.read_sessions, self._book, self.thresholds_of)
                made += found
        self.metrics.case_links.inc(made)
        return made

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                if self._leading():
                    self.run_once()
            except Exception:
                log.exception("case linking pass failed")
            self._stop.wait(MIN_PASS_S)
