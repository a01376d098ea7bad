"""Request body size limit, enforced before the body is parsed: a declared Content-Length over
the limit is refused at once, and a streamed body is cut off as soon as it passes the limit.

FastAPI's own ``max_body_size`` (Starlette's RequestBodyLimitMiddleware) answers a declared
oversized body in plain text, not with the documented error body, hence this one."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_body


class _TooLarge(HTTPException):
    """Raised as a streamed body passes the limit. An HTTPException, which FastAPI lets through
    its reading of the body (any other error there becomes a 400), so that the app's handler
    answers 413 ``payload_too_large``; this middleware answers it for a route that lets it out."""


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, f"the request body exceeds {self.max_bytes} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        message = f"the request body exceeds {self.max_bytes} bytes"
        body = JSONResponse(error_body("payload_too_large", message)).body  # rendered as every other error
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
