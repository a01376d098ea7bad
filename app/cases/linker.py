"""The thread that links cases after their identifications (app/cases/links.py).

Off the identification's path: a search is answered first, and compared with the other cases'
probes afterwards, here. It is woken after each batch of searches, and otherwise looks every
``poll_s`` for finished searches not yet compared (those another process ran, or that a stop
interrupted); the database remembers which were, so each is compared once.
"""

from __future__ import annotations

import logging
import threading

from app.cases.links import ThresholdsOf, link_search, skip_search, unchecked_searches
from app.db.session import Sessions
from app.encryption.exceptions import SealedValueRefused
from app.observability.metrics import Metrics

log = logging.getLogger(__name__)


class CaseLinker:
    def __init__(self, sessions: Sessions, thresholds_of: ThresholdsOf, poll_s: float, metrics: Metrics) -> None:
        self.sessions, self.thresholds_of, self.poll_s, self.metrics = sessions, thresholds_of, poll_s, metrics
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
        """Compare every finished search not yet compared; returns how many links were made."""
        made = 0
        while not self._stop.is_set():
            pending = unchecked_searches(self.sessions)
            if not pending:
                break
            for search_id in pending:
                try:
                    made += len(link_search(self.sessions, search_id, self.thresholds_of))
                except SealedValueRefused:
                    log.error("probes do not open: search not linked", extra={"event": {"search_id": search_id}})
                    skip_search(self.sessions, search_id)
        self.metrics.case_links.inc(made)
        return made

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self.run_once()
            except Exception:
                log.exception("case linking pass failed")
