"""Rate limits: per principal (every request) and per client address (failed key checks, which
slows down key guessing). Moving windows from the ``limits`` library, kept in memory: one
process serves a data folder, so there is no shared store to keep them in."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute, storage, strategies

from app.core.errors import RateLimited


class TooManyFailedAuthentications(RateLimited):
    code = "too_many_failed_authentications"


class Throttle:
    def __init__(self, requests_per_minute: int, failed_auth_per_minute: int, peer_per_minute: int = 600) -> None:
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._requests = RateLimitItemPerMinute(requests_per_minute)
        self._failures = RateLimitItemPerMinute(failed_auth_per_minute)
        self._peer_messages = RateLimitItemPerMinute(peer_per_minute)

    def check_address(self, address: str) -> None:
        """Refuse an address that failed authentication too often in the last minute."""
        if not self._limiter.test(self._failures, "auth", address):
            raise TooManyFailedAuthentications(
                "too many failed authentications from this address; wait and retry",
                retry_after_s=self._retry(self._failures, "auth", address),
            )

    def failed(self, address: str) -> None:
        self._limiter.hit(self._failures, "auth", address)

    def hit_principal(self, principal_id: int) -> None:
        if not self._limiter.hit(self._requests, "principal", str(principal_id)):
            raise RateLimited(
                "request rate limit reached for this key; wait and retry",
                retry_after_s=self._retry(self._requests, "principal", str(principal_id)),
            )

    def hit_peer(self, peer_id: int) -> None:
        """Count a signed message of a peer node (they carry no API key)."""
        if not self._limiter.hit(self._peer_messages, "peer", str(peer_id)):
            raise RateLimited(
                "message rate limit reached for this peer; wait and retry",
                retry_after_s=self._retry(self._peer_messages, "peer", str(peer_id)),
            )

    def _retry(self, item: RateLimitItemPerMinute, *keys: str) -> int:
        reset = self._limiter.get_window_stats(item, *keys).reset_time
        return max(1, math.ceil(reset - time.time()))
