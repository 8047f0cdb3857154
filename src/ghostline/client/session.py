"""One connection to a relay or presence port: the stream, its frames, the handshake.

The only code of the client that reads or writes a socket (`transport.open_stream`
opens it). A `Session` cuts what it reads into frames (`frames.FrameDecoder`) and joins
the room through `handshake.ClientHandshake`; what each port does after WELCOME is
client.py's and presence.py's. Also here: the backoff between connections, and running
a connection's loops until the first of them ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..errors import InternalError, ProtocolError, RelayRefused
from ..protocol.frames import (
    MAX_PING,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    Hello,
    Port,
    Welcome,
    decode_error,
    encode_frame,
)
from ..protocol.handshake import ClientHandshake, Joined, Refused
from .transport import RelayAddress, TlsExpected, TlsOptions, looks_like_tls, open_stream


class ClosedAtOnce(ConnectionError):
    """The relay closed the connection before sending a byte (a TLS relay does that to
    a plain client)."""


class Session:
    """Frames over one stream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        addr: RelayAddress,
        *,
        tls: bool,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.addr = addr
        self.tls = tls
        self.decoder = FrameDecoder()
        self.frames: deque[Frame] = deque()
        self.last_rx = 0.0  # loop time of the last frame received
        self.got_bytes = False

    @classmethod
    async def open(
        cls,
        addr: RelayAddress,
        port: int,
        *,
        tls: TlsOptions | None,
        proxy: str | None,
        timeout: float,
    ) -> Session:
        reader, writer = await open_stream(addr.host, port, tls=tls, proxy=proxy, timeout=timeout)
        return cls(reader, writer, addr, tls=tls is not None)

    async def join(
        self, port: Port, hello: Hello, sign: Callable[[bytes], bytes], timeout: float
    ) -> Welcome:
        """Run the handshake to WELCOME; raises RelayRefused for an ERROR frame,
        ProtocolError for anything else the relay should not have sent."""
        handshake = ClientHandshake(port, hello, sign)
        async with asyncio.timeout(timeout):
            self.write(handshake.data_to_send())
            while True:
                event = handshake.receive(await self.read())
                self.write(handshake.data_to_send())
                if isinstance(event, Refused):
                    raise RelayRefused(event.code, event.reason)
                if isinstance(event, Joined):
                    return event.welcome

    async def read(self) -> Frame:
        while not self.frames:
            data = await self.reader.read(1 << 16)
            if not data:
                if not self.got_bytes:
                    raise ClosedAtOnce(f"{self.addr} closed the connection before answering")
                raise ConnectionError("the relay closed the connection")
            if not self.got_bytes and not self.tls and looks_like_tls(data):
                raise TlsExpected(f"{self.addr} answered with TLS")
            self.got_bytes = True
            self.frames.extend(self.decoder.feed(data))
        self.last_rx = asyncio.get_running_loop().time()
        return self.frames.popleft()

    def write(self, data: bytes) -> None:
        if data:
            self.writer.write(data)

    async def ping_loop(self, interval: float) -> None:
        """Ping every `interval` seconds; a relay silent for 2.5 of them is gone."""
        loop = asyncio.get_running_loop()
        self.last_rx = loop.time()
        while True:
            await asyncio.sleep(interval)
            silent = loop.time() - self.last_rx
            if silent > 2.5 * interval:
                raise ConnectionError(f"the relay has been silent for {silent:.0f} s")
            self.write(encode_frame(FrameType.PING, os.urandom(8)[:MAX_PING]))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()


def refused_or_unexpected(frame: Frame, what: str = "frame type") -> Exception:
    """The error for a frame a port does not expect: the relay's refusal if it is an
    ERROR frame, else a malformed frame."""
    if frame.type == FrameType.ERROR:
        return RelayRefused(*decode_error(frame.body))
    return ProtocolError(ErrorCode.MALFORMED, f"unexpected {what} 0x{frame.type:02x}")


def unexpected(exc: BaseException) -> InternalError:
    """An unexpected exception, as an error a person can read and report."""
    return InternalError(f"unexpected error: {type(exc).__name__}: {exc}")


@dataclass
class Backoff:
    base: float
    cap: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


async def first_failure(*coros: Awaitable[None]) -> None:
    """Run coroutines together until one ends; cancel the rest; re-raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
