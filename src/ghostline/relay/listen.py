"""A TLS port that looks at each connection's first byte before its TLS handshake.

asyncio's own TLS server tells nobody why a handshake failed: a plain client on a TLS
port, or a client that rejects the certificate, leaves no trace. So a TLS port accepts
plain TCP here and waits for the first byte (without reading it): 0x16, a TLS handshake
record, goes on to the TLS handshake, whose failure is logged with its reason; anything
else is a plain client, answered in plain with ERROR 3 `frames.REASON_TLS_ONLY`, which
its client can read and show.

Connections in this phase count against the connection limits (`TlsGate`), so a flood
of silent connections cannot hold sockets past them. One refused for those limits is
still told why, so that its client can say the relay is full rather than unreachable:
up to `_REFUSING` at once get a TLS handshake (of at most `_REFUSE_TIMEOUT` seconds)
and ERROR 8 through it; past that, they are closed unanswered.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from ..protocol.frames import ErrorCode, encode_error

_TLS_HANDSHAKE_RECORD = 0x16
_ACCEPT_RETRY = 1.0  # seconds to pause accepting when out of file descriptors
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_REFUSING = 16  # connections refused for the limits that are answered at once
_REFUSE_TIMEOUT = 2.0  # seconds such a connection gets for its TLS handshake


class TlsGate(Protocol):
    """What the relay server provides to a TLS listener."""

    def admit_early(self, address: str) -> str | None:
        """Count a connection before its TLS handshake; returns why it is refused."""

    def forget_early(self, address: str) -> None: ...

    def refused_early(self, port_name: str, peer: str, reason: str, code: int = 0) -> None:
        """Log (within the log's limits) and count a connection closed before it had a
        protocol (`code`: the ERROR it was sent, 0 for none)."""


class TlsListener:
    """One TLS port: its listening sockets and their accept loops."""

    def __init__(
        self,
        gate: TlsGate,
        port_name: str,
        context: ssl.SSLContext,
        make: Callable[[bool], asyncio.Protocol],
        handshake_timeout: float,
    ) -> None:
        self.gate = gate
        self.port_name = port_name
        self.context = context
        self.make = make  # make(plain): the connection's protocol; plain: no TLS came
        self.handshake_timeout = handshake_timeout
        self.sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusing = 0

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int, backlog: int = 1024) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and len(self.sockets) > 1:  # every address on the same port
                    address = (address[0], self.port, *address[2:])
                sock.bind(address)
                sock.listen(backlog)
                sock.setblocking(False)
        except BaseException:
            self.close()
            raise
        for sock in self.sockets:
            self._spawn(self._accept(sock))

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for sock in self.sockets:
            sock.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(listener)
            except ConnectionAbortedError:
                continue
            except OSError as err:
                if err.errno not in _OUT_OF_RESOURCES:
                    raise
                await asyncio.sleep(_ACCEPT_RETRY)  # as asyncio's own server does
                continue
            self._spawn(self._start(conn, address))

    async def _start(self, conn: socket.socket, address: tuple[str, int]) -> None:
        host = str(address[0])
        peer = f"{address[0]}:{address[1]}"
        refusal = self.gate.admit_early(host)
        if refusal is not None:
            if self._refusing < _REFUSING:
                self._refusing += 1
                try:
                    await self._refuse(conn, refusal)
                finally:
                    self._refusing -= 1
            conn.close()
            self.gate.refused_early(self.port_name, peer, refusal, ErrorCode.RELAY_FULL)
            return
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.handshake_timeout
        try:
            first = await _first_byte(conn, self.handshake_timeout)
            if first is None:
                self.gate.refused_early(
                    self.port_name, peer, "handshake did not finish in time (nothing sent)"
                )
            elif first == _TLS_HANDSHAKE_RECORD:
                await loop.connect_accepted_socket(
                    lambda: self.make(False),
                    conn,
                    ssl=self.context,
                    ssl_handshake_timeout=max(0.1, deadline - time.monotonic()),
                )
                return
            elif first >= 0:
                await loop.connect_accepted_socket(lambda: self.make(True), conn)
                return
        except asyncio.CancelledError:
            conn.close()
            raise
        except (ssl.SSLError, OSError, TimeoutError) as err:
            self.gate.refused_early(self.port_name, peer, f"TLS handshake failed: {_why(err)}")
        finally:
            self.gate.forget_early(host)
        conn.close()

    async def _refuse(self, conn: socket.socket, reason: str) -> None:
        """Answer ERROR 8 `reason`: through TLS to a TLS client, in plain to another."""
        loop = asyncio.get_running_loop()
        frame = encode_error(ErrorCode.RELAY_FULL, reason)
        try:
            first = await _first_byte(conn, _REFUSE_TIMEOUT)
            if first == _TLS_HANDSHAKE_RECORD:
                transport, refusal = await loop.connect_accepted_socket(
                    lambda: _Refusal(frame), conn, ssl=self.context,
                    ssl_handshake_timeout=_REFUSE_TIMEOUT,
                )  # fmt: skip
                try:
                    async with asyncio.timeout(_REFUSE_TIMEOUT):
                        await refusal.lost
                except TimeoutError:
                    transport.abort()
            elif first is not None and first >= 0:
                async with asyncio.timeout(_REFUSE_TIMEOUT):
                    await loop.sock_sendall(conn, frame)
        except (ssl.SSLError, OSError, TimeoutError):
            pass  # it was refused anyway; the log says why


class _Refusal(asyncio.Protocol):
    """Sends one ERROR frame once the TLS handshake is done, then closes."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.frame)
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def _first_byte(conn: socket.socket, timeout: float) -> int | None:
    """The first byte the peer sent, left unread; -1 if it closed first, None on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            data = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return -1
        else:
            return data[0] if data else -1
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(conn.fileno(), _wake, ready)
        try:
            async with asyncio.timeout_at(deadline):
                await ready
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(conn.fileno())


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _why(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError) and err.reason:
        return str(err.reason)  # e.g. TLSV1_ALERT_UNKNOWN_CA: the client rejected us
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, ConnectionError):  # as clients do that reject the certificate
        return "the client closed the connection (does it trust this certificate?)"
    return str(err) or type(err).__name__
