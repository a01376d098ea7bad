"""Rate limits: per principal (every request), per peer node (every signed message) and per
client address (failed key checks, which slows down key guessing). Each is a moving window of
one minute, kept in memory: the processes of a node count apart (the README says so).

Why not the ``limits`` library's memory storage, which this replaced: it starts a timer thread
to expire its windows every 10 ms of traffic, and ``Thread.start`` waits for the new thread to
take the interpreter lock. On the event loop that wait was 5% of its time at one client, and
identifications answered 0.6 ms sooner at the median without it (20k templates, one client,
alternated runs). Here a window forgets its old hits when it is next counted, and a sweep drops
the windows of keys gone quiet, on the calling thread, with no thread of its own."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from app.core.errors import RateLimited

WINDOW_S = 60.0
SWEEP_EVERY = 10_000
"""Hits between two sweeps of the windows of keys that made none in the last minute."""


class TooManyFailedAuthentications(RateLimited):
    code = "too_many_failed_authentications"


class MovingWindows:
    """At most ``limit`` hits per key in any ``WINDOW_S`` seconds: each key's hits of the last
    window, oldest first. Counting a hit costs the hits it forgets, so O(1) amortised; memory is
    the hits of the last minute. Thread-safe: principals are counted on the event loop, peers'
    messages and page logins too, some in worker threads."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._until_sweep = SWEEP_EVERY

    def hit(self, key: str) -> float | None:
        """Count a hit of ``key``; None if it is within the limit, else the seconds until one
        would be (the hit refused is not counted)."""
        with self._lock:
            now = self._clock()
            hits = self._current(key, now)
            if len(hits) >= self.limit:
                return hits[0] + WINDOW_S - now
            hits.append(now)
            self._until_sweep -= 1
            if self._until_sweep <= 0:
                self._sweep(now)
            return None

    def wait_s(self, key: str) -> float | None:
        """What :meth:`hit` would answer, without counting a hit."""
        with self._lock:
            now = self._clock()
            hits = self._hits.get(key)  # asking makes no window: every caller's address is asked
            if hits is None:
                return None
            _forget_before(hits, now - WINDOW_S)
            return hits[0] + WINDOW_S - now if len(hits) >= self.limit else None

    def _current(self, key: str, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        _forget_before(hits, now - WINDOW_S)
        return hits

    def _sweep(self, now: float) -> None:
        self._until_sweep = SWEEP_EVERY
        self._hits = {key: hits for key, hits in self._hits.items() if hits and hits[-1] > now - WINDOW_S}


def _forget_before(hits: deque[float], cutoff: float) -> None:
    while hits and hits[0] <= cutoff:
        hits.popleft()


class Throttle:
    def __init__(self, requests_per_minute: int, failed_auth_per_minute: int, peer_per_minute: int = 600) -> None:
        self._requests = MovingWindows(requests_per_minute)
        self._failures = MovingWindows(failed_auth_per_minute)
        self._peer_messages = MovingWindows(peer_per_minute)

    def check_address(self, address: str) -> None:
        """Refuse an address that failed authentication too often in the last minute."""
        wait_s = self._failures.wait_s(address)
        if wait_s is not None:
            raise TooManyFailedAuthentications(
                "too many failed authentications from this address; wait and retry", retry_after_s=_whole(wait_s)
            )

    def failed(self, address: str) -> None:
        self._failures.hit(address)

    def hit_principal(self, principal_id: int) -> None:
        wait_s = self._requests.hit(str(principal_id))
        if wait_s is not None:
            raise RateLimited("request rate limit reached for this key; wait and retry", retry_after_s=_whole(wait_s))

    def hit_peer(self, peer_id: int) -> None:
        """Count a signed message of a peer node (they carry no API key)."""
        wait_s = self._peer_messages.hit(str(peer_id))
        if wait_s is not None:
            raise RateLimited("message rate limit reached for this peer; wait and retry", retry_after_s=_whole(wait_s))


def _whole(wait_s: float) -> int:
    """Retry-After is whole seconds: rounded up, at least one."""
    return max(1, math.ceil(wait_s))
