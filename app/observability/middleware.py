"""Per request: a request id (the caller's ``X-Request-ID`` when it is sane, else a new one),
returned in the response header; one access log line; request metrics by route template."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.logging import principal_id, request_id
from app.observability.metrics import Metrics

log = logging.getLogger("readmit.access")
SANE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if SANE_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        principal_token = principal_id.set(None)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            self.metrics.http_requests.labels(method, template, str(status)).inc()
            self.metrics.http_latency.labels(method, template).observe(duration)
            state = scope.get("state") or {}
            log.info(
                "request",
                extra={
                    "event": {
                        "method": method,
                        "route": template,
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                        "principal_id": state.get("principal_id"),
                    }
                },
            )
            request_id.reset(token)
            principal_id.reset(principal_token)
