"""JSON request bodies parsed by pydantic-core's parser (Rust) instead of the standard library's.

FastAPI parses a JSON body with ``json.loads`` before validating it. A ``records:batch`` of 1,000
512-d templates in ``templates_b64`` is 2.8 MB of JSON: 4.7 ms for ``json.loads``, 1.0 ms here,
spent under the interpreter lock every other request waits for. The values are the same (NaN
and Infinity literals included, which Python clients send); UTF-16 bodies and lone surrogates,
which RFC 8259 leaves out of JSON between systems, are refused as not JSON, as undecodable UTF-8
is (the standard library raised an unhandled error on it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic_core import from_json

_WHERE = re.compile(r"at line (\d+) column (\d+)")


class _JSONBodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = from_json(body)
            except ValueError as error:
                text = body.decode(errors="replace")
                raise json.JSONDecodeError(str(error), text, _offset(text, str(error))) from None
        return self._json


def _offset(text: str, message: str) -> int:
    """Where in ``text`` the parser stopped, from its "line L column C" (1-based)."""
    where = _WHERE.search(message)
    if where is None:
        return 0
    line, column = int(where.group(1)), int(where.group(2))
    lines = text.split("\n", line - 1)
    return sum(len(before) + 1 for before in lines[: line - 1]) + max(column - 1, 0)


class JSONBodyRoute(APIRoute):
    """The API's routes: their JSON bodies parsed as the module docstring says."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_json_fast(request: Request) -> Response:
            return await handler(_JSONBodyRequest(request.scope, request.receive))

        return parse_json_fast
