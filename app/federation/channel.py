"""Messages to a peer node: signed, sent, and their answers verified, with per-peer metrics.

A peer that cannot be reached, is too slow (``federation_timeout_s``), fails with a 5xx or
answers with a signature that does not verify is ``peer_unavailable`` to the caller, and
counted as a failure of that peer; any other answer, 2xx or 4xx, is returned with its proof."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from app.core.errors import DomainError
from app.federation.models import Peer
from app.federation.node import NodeIdentity, public_key_of
from app.federation.signatures import REQUIRED_IN_RESPONSE, Proof, sign_request, verify
from app.observability.metrics import Metrics


class PeerUnavailable(Exception):
    """No valid answer from the peer; ``reason`` says how it failed (for metrics and logs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Exchange:
    """A message sent and its verified answer, with both signatures."""

    status: int
    body: dict[str, Any]
    sent: Proof
    answer: Proof


class PeerChannel:
    """One HTTP client shared by every thread that talks to peers (httpx's connection pool is
    thread-safe): the searches of one identification are sent to their peers at once."""

    def __init__(self, node: NodeIdentity, metrics: Metrics, timeout_s: float, window_s: int) -> None:
        self.node = node
        self.metrics = metrics
        self.window_s = window_s
        self.client = httpx.Client(timeout=timeout_s)

    def send(
        self,
        peer: Peer,
        kind: str,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        timeout_s: float | None = None,
    ) -> Exchange:
        """Sign and send one message to ``peer``; raise PeerUnavailable without a valid answer
        within ``timeout_s`` (default: ``federation_timeout_s``)."""
        content = json.dumps(payload, separators=(",", ":")).encode() if payload is not None else b""
        headers = {"content-type": "application/json"} if payload is not None else {}
        timeout = self.client.timeout if timeout_s is None else httpx.Timeout(timeout_s)
        request = self.client.build_request(method, peer.url + path, content=content, headers=headers, timeout=timeout)
        sent = sign_request(self.node, request)
        started = time.perf_counter()
        try:
            response = self.client.send(request)
        except httpx.TimeoutException:
            raise self._failed(peer, kind, "timeout") from None
        except httpx.HTTPError:
            raise self._failed(peer, kind, "unreachable") from None
        if response.status_code >= 500:
            raise self._failed(peer, kind, "server_error")
        try:
            answer = verify(
                response, response.content, peer.key_id, public_key_of(peer), self.window_s, REQUIRED_IN_RESPONSE
            )
            body = response.json()
        except (DomainError, ValueError):
            raise self._failed(peer, kind, "invalid_signature") from None
        self.metrics.peer_latency.labels(peer.country, kind).observe(time.perf_counter() - started)
        self.metrics.peer_messages.labels(peer.country, kind, "sent", str(response.status_code)).inc()
        return Exchange(response.status_code, body, sent, answer)

    def _failed(self, peer: Peer, kind: str, reason: str) -> PeerUnavailable:
        self.metrics.peer_failures.labels(peer.country, kind, reason).inc()
        return PeerUnavailable(reason)

    def close(self) -> None:
        self.client.close()
