"""A meddling network hop for the demo and the tests: a TCP proxy on 127.0.0.1 that
splits both directions into frames and lets a hook drop, replace or pass each one.

`ghostline demo` uses it to flip one byte of one message on its way to Carol; the
client and end-to-end tests use it to hold or tamper with frames (`Tamperer`) and to
cut the network (`drop_connections`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .protocol.envelope import HEADER_LEN
from .protocol.frames import (
    Frame,
    FrameDecoder,
    FrameType,
    decode_deliver,
    encode_deliver,
    encode_frame,
)

# hook(direction, frame) -> bytes to forward instead (b"" drops the frame), or None to
# forward it unchanged. direction is "up" (client to relay) or "down" (relay to client).
FrameHook = Callable[[str, Frame], bytes | None]


class FrameProxy:
    """A TCP proxy on 127.0.0.1 that splits both directions into frames for a hook."""

    def __init__(self, target_host: str, target_port: int, hook: FrameHook | None = None) -> None:
        self.target = (target_host, target_port)
        self.hook = hook
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()

    def drop_connections(self) -> None:
        """Cut every connection through the proxy (the network fails)."""
        for writer in list(self._writers):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.ensure_future(self._pump("up", reader, up_writer)),
            asyncio.ensure_future(self._pump("down", up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)

    async def _pump(
        self, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        decoder = FrameDecoder(max_frame=1 << 24)
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(1 << 16):
                out = bytearray()
                for frame in decoder.feed(data):
                    replaced = self.hook(direction, frame) if self.hook else None
                    out += encode_frame(frame.type, frame.body) if replaced is None else replaced
                if out:
                    writer.write(bytes(out))
                    await writer.drain()


def flip_ciphertext_byte(frame: Frame) -> bytes:
    """A DELIVER frame with the first ciphertext byte of its sealed message flipped."""
    seq, sealed = decode_deliver(frame.body)
    flipped = bytearray(sealed)
    flipped[HEADER_LEN] ^= 0x01
    return encode_deliver(seq, bytes(flipped))


class Tamperer:
    """A hook that flips one byte of the next `armed` DELIVER frames it sees."""

    def __init__(self) -> None:
        self.armed = 0
        self.tampered: list[int] = []  # seqs it changed

    def __call__(self, direction: str, frame: Frame) -> bytes | None:
        if direction == "down" and frame.type == FrameType.DELIVER and self.armed:
            self.armed -= 1
            self.tampered.append(decode_deliver(frame.body)[0])
            return flip_ciphertext_byte(frame)
        return None
