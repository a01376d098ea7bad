"""A bounded cache of database rows, kept for a few seconds and emptied by every committed change
to the tables it caches (app/db/watch.py in this process; a PostgreSQL notification from the
others, app/db/notify.py ``Notified``).

An entry is tagged with the cache's generation when its read began, and each emptying bumps the
generation: a row read before a change committed, and put after it, is not kept. The entries'
age bounds how long a change is missed should a notification be lost. Bounded: the least
recently used entries go first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class NotCached(Exception):
    """A row the cache does not hold: the caller reads the database instead."""


class CommittedRowsCache:
    def __init__(self, ttl_s: float, size: int = 10_000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self.generation = 0
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The value kept for ``key``; raises :class:`NotCached` when there is none (or it aged out)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] < time.monotonic():
                raise NotCached(key)
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, value: Any, generation: int) -> None:
        """Keep ``value``, read since ``generation``, unless a change has committed since."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            self._entries[key] = (time.monotonic() + self.ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()
