"""Security headers on every response: a strict content security policy (the pages load
nothing but their own stylesheet and run no script), no framing, no sniffing, no referrer, and
no caching of pages that show identity attributes. CORS stays closed: no Access-Control header
is ever sent."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
NO_STORE = (b"cache-control", b"no-store")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        docs = path.startswith(("/docs", "/redoc"))  # the API docs page loads its own script and styles

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [] if docs else list(HEADERS)
                if path.startswith("/review") and not path.startswith("/review/static"):
                    extra.append(NO_STORE)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
