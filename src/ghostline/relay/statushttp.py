"""`--metrics-port`: a tiny HTTP/1.0 responder for the operator, on 127.0.0.1 by default.

    GET /health   200 "ok" while the relay serves and its store answers; else 503 and
                  the reason (e.g. NATS unreachable), one line
    GET /metrics  the Prometheus text format (metrics.py)

Anything else is 404 (or 405 for another method). One request per connection; a
request must arrive whole within `_READ_TIMEOUT` seconds and `_MAX_REQUEST` bytes, and
at most `_MAX_CLIENTS` are served at once: it is a port for a scraper and a health
check, not for the public. It never shows a room id, a roster or a message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

_READ_TIMEOUT = 5.0
_MAX_REQUEST = 8192
_MAX_CLIENTS = 8
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}  # fmt: skip
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatusServer:
    def __init__(self, health: Callable[[], str | None], metrics: Callable[[], str]) -> None:
        self.health = health  # None: healthy; else why not
        self.metrics = metrics
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=_MAX_REQUEST)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= _MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, kind, body = self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, kind, body = 400, "text/plain", "bad request\n"
        except ConnectionError:
            return
        finally:
            self._clients -= 1
        data = body.encode()
        writer.write(
            f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(_READ_TIMEOUT):
                await writer.drain()
        writer.close()

    def _answer(self, head: bytes) -> tuple[int, str, str]:
        if len(head) > _MAX_REQUEST:
            return 400, "text/plain", "bad request\n"
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return 400, "text/plain", "bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target not in (b"/health", b"/metrics"):
            return 404, "text/plain", "not found: GET /health or /metrics\n"
        if method != b"GET":
            return 405, "text/plain", "only GET\n"
        if target == b"/metrics":
            return 200, METRICS_TYPE, self.metrics()
        problem = self.health()
        if problem is None:
            return 200, "text/plain", "ok\n"
        return 503, "text/plain", problem + "\n"
