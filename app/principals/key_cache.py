"""Principals by the hash of their API key, kept for a few seconds.

Every request checks its key; reading the principal from the database each time cost more than
the rest of the check, and sat beside the single SQLite writer. A revocation made through this
process removes the entry at once, so a revoked key fails on its next request; one made
through another process is seen when the entry ages out (``ttl_s``). Bounded: the least recently
used entries go first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from app.principals.models import Principal


class KeyCache:
    def __init__(self, ttl_s: float, size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[digest] = (time.monotonic() + self.ttl_s, principal)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def forget(self, principal_id: int) -> None:
        with self._lock:
            for digest in [d for d, (_, p) in self._entries.items() if p.id == principal_id]:
                del self._entries[digest]
