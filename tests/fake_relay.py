"""A hostile relay over real loopback sockets, for client tests.

It speaks just enough of the handshake (any PROVE is accepted) to reach the point where
a real relay would deliver, and then lets a test's `play` coroutine send whatever it
likes. Both ports (relay and presence) are served; `play` sees which one from the
session's `port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ghostline.client.transport import RelayAddress
from ghostline.protocol.frames import (
    NONCE_LEN,
    Frame,
    FrameDecoder,
    FrameType,
    Hello,
    Port,
    Welcome,
    encode_frame,
)


@dataclass
class FakeSession:
    """One client connection to the fake relay, after WELCOME."""

    index: int  # 0 for the first connection to this port, 1 for the next, ...
    port: Port
    hello: Hello
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(max_frame=1 << 24))
    frames: list[Frame] = field(default_factory=list)

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            self.writer.write(frame)

    async def next_frame(self) -> Frame | None:
        """The next frame the client sends, or None when it closed the connection."""
        while not self.frames:
            data = await self.reader.read(1 << 16)
            if not data:
                return None
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    async def serve(self) -> None:
        """Behave until the client leaves: answer PING with PONG, ignore the rest."""
        while (frame := await self.next_frame()) is not None:
            if frame.type == FrameType.PING:
                self.send(encode_frame(FrameType.PONG, frame.body))
                await self.writer.drain()


Play = Callable[[FakeSession], Awaitable[None]]


async def _serve(session: FakeSession) -> None:
    await session.serve()


class FakeRelay:
    """Serves the relay and presence ports on 127.0.0.1. Each authenticated connection
    runs `play` (default: behave); `before_welcome`, when set, replaces the WELCOME
    (return the bytes to send instead, e.g. an ERROR frame)."""

    def __init__(
        self,
        play: Play = _serve,
        *,
        presence_play: Play = _serve,
        head: int = 0,
        store_id: bytes = b"fake relay store",
        before_welcome: Callable[[int, Hello], bytes | None] | None = None,
    ) -> None:
        self.play = play
        self.presence_play = presence_play
        self.head = head
        self.store_id = store_id
        self.before_welcome = before_welcome
        self.hellos: dict[Port, list[Hello]] = {Port.RELAY: [], Port.PRESENCE: []}
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []
        self.address = RelayAddress("127.0.0.1", 0)

    async def start(self) -> RelayAddress:
        ports = []
        for port in (Port.RELAY, Port.PRESENCE):
            server = await asyncio.start_server(
                lambda r, w, p=port: self._handle(p, r, w), "127.0.0.1", 0
            )
            self._servers.append(server)
            ports.append(int(server.sockets[0].getsockname()[1]))
        self.address = RelayAddress("127.0.0.1", ports[0], ports[1])
        return self.address

    def connections(self, port: Port = Port.RELAY) -> int:
        return len(self.hellos[port])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _handle(
        self, port: Port, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        decoder = FrameDecoder()
        pending: list[Frame] = []

        async def read() -> Frame | None:
            while not pending:
                data = await reader.read(1 << 16)
                if not data:
                    return None
                pending.extend(decoder.feed(data))
            return pending.pop(0)

        try:
            frame = await read()
            if frame is None or frame.type != FrameType.HELLO:
                return
            hello = Hello.decode(frame.body)
            index = len(self.hellos[port])
            self.hellos[port].append(hello)
            writer.write(encode_frame(FrameType.CHALLENGE, os.urandom(NONCE_LEN)))
            if await read() is None:
                return
            instead = self.before_welcome(index, hello) if self.before_welcome else None
            if instead is not None:
                writer.write(instead)
                await writer.drain()
                return
            writer.write(Welcome(self.head, self.store_id).encode())
            session = FakeSession(index, port, hello, reader, writer)
            session.frames.extend(pending)
            await (self.play if port == Port.RELAY else self.presence_play)(session)
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a broken test script: keep it for the test to see
            self.errors.append(exc)
        finally:
            writer.close()
            self._tasks.discard(task)
