"""The follower: one thread per process that keeps its indexes current with the changes every
other process commits to the same database.

Each pass reads every gallery's change number (one query); a gallery this process has no index
for (created by another process) is opened, and one whose index is behind is caught up from the
change log, under its write lock (:meth:`IndexRegistry.catch_up`: nothing applied twice or out of
order, whoever applies first). A pass runs as soon as PostgreSQL notifies a commit, and every
``poll_s`` whatever happens, which bounds the delay when a notification is lost (and is the
only wake-up on SQLite).

A batch of searches does not wait for the next pass: :meth:`Follower.catch_up_on` brings the
galleries it searches up to the database first, so that a search sees every change committed
before it ran, whichever process or node committed it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from typing import Protocol

from app.indexes.changes import ChangeFeed
from app.indexes.exceptions import ChangeLogGap
from app.indexes.registry import IndexRegistry

log = logging.getLogger(__name__)


class Wakeup(Protocol):
    """What wakes the follower before its polling interval (app/db/notify.py ``Listener``)."""

    def wait(self, timeout_s: float) -> bool: ...

    def close(self) -> None: ...


class Follower:
    def __init__(
        self,
        registry: IndexRegistry,
        feed: ChangeFeed,
        open_gallery: Callable[[int], object],
        rebuild_gallery: Callable[[int], object],
        wakeup: Wakeup | None,
        poll_s: float,
    ) -> None:
        """``open_gallery``: load or build the index of a gallery new to this process (or note
        why it cannot);
        ``rebuild_gallery``: rebuild one whose changes the log no longer holds."""
        self.registry, self.feed = registry, feed
        self.open_gallery, self.rebuild_gallery = open_gallery, rebuild_gallery
        self.wakeup, self.poll_s = wakeup, poll_s
        self._refused: set[int] = set()
        self._opening = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One pass over every gallery; returns how many changes it applied."""
        applied = 0
        for gallery_id, database_seq in self.feed.seqs().items():
            try:
                applied += self._follow(gallery_id, database_seq)
            except Exception:  # one gallery's failure must not hold the others back
                log.exception("index follower failed on a gallery", extra={"event": {"gallery_id": gallery_id}})
        return applied

    def catch_up_on(self, gallery_ids: Collection[int], before_waiting: Callable[[], None]) -> None:
        """Bring these galleries' indexes to the database's latest committed change now, in the
        calling thread (one query when none is behind). Without it, a record enrolled through
        another process a few milliseconds before a search there would be silently missed
        until the follower's next pass. ``before_waiting`` is called before anything that may
        wait: opening a gallery, a gallery held by another (a snapshot being saved), a rebuild
        (a batch of searches gives the matcher back to the others then). Raises what reading
        the database raises: a search must fail rather than run on an index it could not bring
        up to date."""
        seqs = self.feed.seqs()
        for gallery_id in gallery_ids:
            if gallery_id in seqs:
                self._follow(gallery_id, seqs[gallery_id], before_waiting)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="index-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 5)
        if self.wakeup is not None:
            self.wakeup.close()

    def _follow(self, gallery_id: int, database_seq: int, before_waiting: Callable[[], None] = lambda: None) -> int:
        """Open or catch up one gallery's index; returns how many changes it applied."""
        if self.registry.is_being_created(gallery_id):
            return 0  # by this process, which opens its index
        if not self.registry.is_loaded(gallery_id):
            if gallery_id not in self._refused:  # one refused stays so (see _open): no wait for it
                before_waiting()
                self._open(gallery_id)
            return 0
        if self.registry.is_behind(gallery_id, database_seq):
            return self._catch_up(gallery_id, database_seq, before_waiting)
        return 0

    def _open(self, gallery_id: int) -> None:
        """Open a gallery another process created, once: the follower's thread and a batch of
        searches may both find it missing. One that ``open_gallery`` refused without raising
        (its shards find no CPUs: it tells /readyz) is left alone, as at start; one that failed
        with an error is tried again next time."""
        with self._opening:
            if gallery_id in self._refused or self.registry.is_loaded(gallery_id):
                return
            self.open_gallery(gallery_id)
            if not self.registry.is_loaded(gallery_id):
                self._refused.add(gallery_id)

    def _catch_up(self, gallery_id: int, database_seq: int, before_waiting: Callable[[], None]) -> int:
        try:
            with self.registry.writing(gallery_id, before_waiting):
                return self.registry.catch_up(gallery_id, database_seq)
        except ChangeLogGap as gap:
            log.warning(
                "index rebuilt: the change log does not cover it",
                extra={"event": {"gallery_id": gallery_id, "reason": gap.message}},
            )
            before_waiting()
            self.rebuild_gallery(gallery_id)
            return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("index follower pass failed")
            if self.wakeup is not None:
                self.wakeup.wait(self.poll_s)
            else:
                self._stop.wait(self.poll_s)
