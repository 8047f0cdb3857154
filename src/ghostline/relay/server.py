"""The relay and presence servers of one relay process: the listening sockets, the
sweeper (idle connections, the log's limits, retention by age) and an orderly close.

Each accepted connection is a `ports.RelayConnection` or `ports.PresenceConnection`
(`connection.py` is what they share); all of them share one backend and one room hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time

from .admission import Admission
from .backend import Backend
from .config import RelayLimits
from .connection import Connection
from .listen import TlsListener
from .logfmt import log_event
from .metrics import Gauges, Metrics, render
from .ports import PresenceConnection, RelayConnection
from .rooms import RoomHub
from .stopping import stop

log = logging.getLogger("ghostline.relay")


class RelayServer:
    """Both servers of one relay process, sharing one backend and one room hub."""

    def __init__(
        self,
        backend: Backend,
        limits: RelayLimits | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.backend = backend
        self.limits = limits or RelayLimits()
        self.ssl_context = ssl_context
        self.metrics = Metrics()
        backend.metrics = self.metrics
        self.admission: Admission[Connection] = Admission(
            self.limits, lambda: self.now(), self.metrics
        )
        self.hub = RoomHub(backend, self.metrics, self.admission.log)
        self.serving = False
        self._servers: list[asyncio.Server] = []
        self._tls: list[TlsListener] = []
        self._sweeper: asyncio.Task[None] | None = None
        self.relay_port = 0
        self.presence_port = 0
        self.now = time.monotonic

    async def start(
        self, host: str = "127.0.0.1", relay_port: int = 8080, presence_port: int = 8081
    ) -> tuple[int, int]:
        """Open the store, bind both ports; returns the ports actually bound."""
        await self.backend.open(self.hub)
        loop = asyncio.get_running_loop()
        self.now = loop.time
        try:
            if self.ssl_context is None:
                relay = await loop.create_server(
                    lambda: RelayConnection(self), host, relay_port, backlog=1024
                )
                self._servers.append(relay)
                presence = await loop.create_server(
                    lambda: PresenceConnection(self), host, presence_port
                )
                self._servers.append(presence)
                self.relay_port = relay.sockets[0].getsockname()[1]
                self.presence_port = presence.sockets[0].getsockname()[1]
            else:
                for kind, port in (
                    (RelayConnection, relay_port),
                    (PresenceConnection, presence_port),
                ):
                    listener = TlsListener(
                        self.admission, kind.port_name, self.ssl_context,
                        lambda plain, kind=kind: kind(self, plain_on_tls=plain),  # type: ignore[misc]
                        self.limits.handshake_timeout,
                    )  # fmt: skip
                    await listener.start(host, port)
                    self._tls.append(listener)
                self.relay_port, self.presence_port = self._tls[0].port, self._tls[1].port
        except BaseException:
            for server in self._servers:
                server.close()
            for listener in self._tls:
                listener.close()
            raise
        self._sweeper = asyncio.ensure_future(self._sweep())
        self.serving = True
        return self.relay_port, self.presence_port

    def set_ssl_context(self, context: ssl.SSLContext) -> None:
        """Use `context` (a reloaded certificate) for every connection from now on;
        connections already open keep theirs."""
        self.ssl_context = context
        for listener in self._tls:
            listener.context = context

    # --- what the operator reads (statushttp.py) -------------------------------------

    def problem(self) -> str | None:
        """Why this relay is not healthy (None: it is)."""
        if not self.serving:
            return "not serving"
        return self.backend.problem()

    def metrics_text(self) -> str:
        connections = {"relay": 0, "presence": 0}
        joined = {"relay": 0, "presence": 0}
        for conn in self.connections:
            connections[conn.port_name] += 1
            if conn.open:
                joined[conn.port_name] += 1
        link = getattr(self.backend, "link", None)
        gauges = Gauges(
            connections=connections, joined=joined, rooms=len(self.hub.rooms),
            max_connections=self.limits.max_connections,
            backend="sqlite" if link is None else "cluster",
            healthy=self.problem() is None,
            nats_connected=None if link is None else bool(link.up),
        )  # fmt: skip
        return render(self.metrics, gauges)

    @property
    def connections(self) -> set[Connection]:
        return self.admission.connections

    async def _sweep(self) -> None:
        limits = self.limits
        interval = max(0.05, min(1.0, limits.idle_timeout / 4))
        next_expiry = 0.0
        while self.serving:  # (not only a cancel: see stopping.py)
            await asyncio.sleep(interval)
            now = self.now()
            for conn in list(self.connections):
                conn.check_idle(now)
            self.admission.sweep()
            if now >= next_expiry:
                next_expiry = now + min(60.0, max(1.0, limits.retention.max_age / 10))
                try:
                    removed = await self.backend.expire(time.time())
                except Exception as err:
                    log_event(log, "expire_failed", level=logging.ERROR, error=repr(err))
                else:
                    if removed:
                        log_event(log, "expired", messages=removed)

    async def close(self) -> None:
        """Stop accepting, store and answer what was accepted, close every connection."""
        self.serving = False
        for server in self._servers:
            server.close()
        for listener in self._tls:
            listener.close()
        for conn in list(self.connections):
            if conn.transport is not None and not conn.closing:
                conn.transport.pause_reading()
        await self.hub.drain()
        if self._sweeper is not None:
            err = await stop(self._sweeper)
            if err is not None:
                log_event(log, "sweep_failed", level=logging.ERROR, error=repr(err))
        for conn in list(self.connections):
            conn.closing = True
            if conn.transport is not None:
                conn.transport.close()
        deadline = time.monotonic() + 2.0
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await server.wait_closed()
        await self.backend.close()
