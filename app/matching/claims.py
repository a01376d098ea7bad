"""This process's share of the search queue: it renews its leases, and claims the searches no
live process holds whenever its scheduler has room.

A claim pass runs at start (it resumes what earlier processes left), on a timer (``poll_s``:
leases lapse silently when a process dies), after a batch when the last pass found more than
there was room for, and at once when another process notifies that it released searches
(PostgreSQL ``LISTEN``, on a connection of its own). The heartbeat renews every lease held here
each third of a lease. A search claimed goes to the scheduler like any other: by deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from app.db.notify import Listener
from app.db.session import Sessions, engine_of
from app.matching.leases import CHANNEL, Leases, forget_dead_leases
from app.matching.scheduler import Scheduler
from app.observability.metrics import Metrics

log = logging.getLogger(__name__)

LISTEN_CHECK_S = 0.5
"""How often the listener looks up from its connection to see whether it should stop."""


class Claimer:
    def __init__(
        self, sessions: Sessions, leases: Leases, scheduler: Scheduler, metrics: Metrics, poll_s: float
    ) -> None:
        self.sessions = sessions
        self.leases = leases
        self.scheduler = scheduler
        self.metrics = metrics
        self.poll_s = poll_s
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._more = False
        """The last pass filled the scheduler's room: more may be claimable once a batch ends."""
        self._threads: list[threading.Thread] = []
        scheduler.after_batch(self._batch_ended)

    def start(self) -> None:
        """Claim what earlier processes left (on SQLite, whatever their leases say: no other
        process can hold them), then keep claiming and renewing in the background."""
        engine = engine_of(self.sessions)
        if engine.dialect.name == "sqlite":
            forget_dead_leases(self.sessions)
        self.claim()
        self._spawn(self._keep, "search-claimer")
        listener = Listener.for_engine(engine, CHANNEL)
        if listener is not None:
            self._spawn(lambda: self._listen(listener), "search-queue-listener")

    def stop(self) -> None:
        """Stop claiming and hand back every search still held (after the scheduler stopped):
        the other processes are told, and claim them without waiting for a lease to lapse."""
        if not self._threads:  # never started
            return
        self._stopping.set()
        self._wakeup.set()
        for thread in self._threads:
            thread.join(timeout=5)
        released = self.leases.release(self.sessions)
        if released:
            log.info("searches handed back", extra={"event": {"searches": released}})

    def wake(self) -> None:
        self._wakeup.set()

    def claim(self) -> int:
        """One claim pass: as many searches as the scheduler has room for."""
        room = self.scheduler.room
        if room == 0:
            return 0
        claimed = self.leases.claim(self.sessions, room)
        for search in claimed:
            self.scheduler.submit(search.search_id, search.deadline, search.searched_galleries)
            self.metrics.search_claims.labels("expired" if search.taken_over else "free").inc()
        self._more = len(claimed) == room
        if claimed:
            log.info(
                "searches claimed",
                extra={"event": {"searches": len(claimed), "taken_over": sum(s.taken_over for s in claimed)}},
            )
        return len(claimed)

    def renew(self) -> None:
        lost = self.leases.renew(self.sessions)
        if lost:
            log.warning("search leases lost", extra={"event": {"searches": sorted(lost)}})

    def _batch_ended(self) -> None:
        if self._more:
            self._wakeup.set()

    def _keep(self) -> None:
        renewal_s = self.leases.duration.total_seconds() / 3
        next_renewal = time.monotonic() + renewal_s
        next_poll = time.monotonic() + self.poll_s
        while not self._stopping.is_set():
            woken = self._wakeup.wait(max(0.0, min(next_poll, next_renewal) - time.monotonic()))
            self._wakeup.clear()
            if self._stopping.is_set():
                return
            try:
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + renewal_s
                    self.renew()
                if woken or time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_s
                    self.claim()
            except Exception:
                log.exception("search queue pass failed")

    def _listen(self, listener: Listener) -> None:
        """Wake the claimer on every notification (a lost connection is made again by the
        listener; polling covers the gap)."""
        try:
            while not self._stopping.is_set():
                if listener.wait(LISTEN_CHECK_S):
                    self.wake()
        finally:
            listener.close()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
