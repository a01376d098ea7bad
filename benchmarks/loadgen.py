"""A lean HTTP/1.1 load generator: keep-alive connections, requests encoded once, responses read
by their Content-Length.

A benchmark that shares two vCPUs with the service it measures must not spend them on its own
side: an ``httpx.AsyncClient`` costs about a millisecond of CPU per request, as much as the
service's whole share of a search, and the figures would measure the client. Here a request is
a few writes and reads on an asyncio stream (about 50 µs). Each connection is one client: it
sends its next request when the previous answer is in, as a border police system waiting for
its result does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Load:
    """What the clients saw: one latency per answered request, and the statuses."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 300)

    @property
    def per_s(self) -> float:
        return len(self.latencies) / self.wall_s if self.wall_s else 0.0


def json_body(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def post(path: str, payload: bytes, headers: dict[str, str]) -> bytes:
    """One POST of a JSON ``payload`` (see :func:`json_body`)."""
    lines = [f"POST {path} HTTP/1.1", "Host: bench", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def run(host: str, port: int, requests: Callable[[int, int], bytes], clients: int, seconds: float) -> Load:
    """``clients`` connections, each sending ``requests(client, turn)`` one after another for
    ``seconds``."""
    load = Load()
    stop = time.perf_counter() + seconds

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        turn = 0
        try:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                writer.write(requests(number, turn))
                status = await _read_response(reader)
                load.latencies.append(time.perf_counter() - started)
                load.statuses[status] = load.statuses.get(status, 0) + 1
                turn += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    load.wall_s = time.perf_counter() - began
    return load


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = next(
        (int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:")), None
    )
    if length is None:
        raise RuntimeError("a response without Content-Length: this client reads only sized bodies")
    await reader.readexactly(length)
    return status
