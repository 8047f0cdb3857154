"""A raw relay client for tests: real sockets, real Ed25519 keys, no pad code.

Sealed messages here are fake but well-framed (a valid header, the right length, zero
tags): the relay checks only framing, which is the point of a blind relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ghostline.protocol.envelope import SUITE, VERSION, pack_header, sealed_length
from ghostline.protocol.frames import (
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    Hello,
    Port,
    Welcome,
    decode_accepted,
    decode_deliver,
    decode_error,
    encode_frame,
    join_statement,
)

TIMEOUT = 5.0


@dataclass
class Group:
    n: int = 3
    room: bytes = field(default_factory=lambda: os.urandom(16))
    keys: list[Ed25519PrivateKey] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [Ed25519PrivateKey.generate() for _ in range(self.n)]

    @property
    def roster(self) -> tuple[bytes, ...]:
        return tuple(k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for k in self.keys)

    def sealed(self, sender: int, counter: int, body: bytes = b"hello", **over: int) -> bytes:
        fields = dict(
            version=VERSION, suite=SUITE, pad_id=self.room, sender=sender, n=self.n,
            counter=counter, offset=counter * 1000, length=len(body),
        )  # fmt: skip
        if "from_member" in over:  # claim another sender in the header
            fields["sender"] = over.pop("from_member")
        fields.update(over)  # type: ignore[arg-type]
        header = pack_header(**fields)  # type: ignore[arg-type]
        return header + body + bytes(sealed_length(len(body), self.n) - 42 - len(body))


class RelayError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"ERROR {code}: {reason}")
        self.code = code
        self.reason = reason


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(1 << 24)
        self.frames: list[Frame] = []
        self.store_id = b""  # from the last WELCOME
        self.pings = 0

    @classmethod
    async def connect(cls, port: int, *, tls: ssl.SSLContext | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, frame_type: int, body: bytes = b"") -> None:
        await self.send_raw(encode_frame(frame_type, body))

    async def recv(self, timeout: float = TIMEOUT) -> Frame:
        """The next frame; raises EOFError when the relay closed."""
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            if not data:
                raise EOFError("relay closed the connection")
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    async def expect(self, frame_type: int, timeout: float = TIMEOUT) -> bytes:
        frame = await self.recv(timeout)
        if frame.type == FrameType.ERROR and frame_type != FrameType.ERROR:
            raise RelayError(*decode_error(frame.body))
        assert frame.type == frame_type, f"expected 0x{frame_type:02x}, got 0x{frame.type:02x}"
        return frame.body

    async def expect_error(self, code: int, timeout: float = TIMEOUT) -> str:
        """The relay answers ERROR `code` and then closes."""
        body = await self.expect(FrameType.ERROR, timeout)
        got, reason = decode_error(body)
        assert got == code, f"expected ERROR {code}, got {got}: {reason}"
        await self.expect_closed(timeout)
        return reason

    async def expect_closed(self, timeout: float = TIMEOUT) -> None:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
                if not data:
                    return
        except ConnectionResetError:
            return

    async def hello(self, group: Group, member: int, resume_after: int = 0) -> bytes:
        """Send HELLO; returns the CHALLENGE nonce."""
        hello = Hello(group.room, member, group.roster, resume_after)
        await self.send(FrameType.HELLO, hello.encode())
        return await self.expect(FrameType.CHALLENGE)

    async def join(
        self, group: Group, member: int, *, port: Port = Port.RELAY, resume_after: int = 0
    ) -> int:
        """Full handshake; returns WELCOME's head (its store id is kept in `store_id`)."""
        nonce = await self.hello(group, member, resume_after)
        statement = join_statement(port, group.room, member, nonce)
        await self.send(FrameType.PROVE, group.keys[member].sign(statement))
        welcome = Welcome.decode(await self.expect(FrameType.WELCOME))
        self.store_id = welcome.store_id
        return welcome.head

    async def publish(self, sealed: bytes) -> None:
        await self.send(FrameType.PUBLISH, sealed)

    async def accepted(self) -> tuple[int, int]:
        return decode_accepted(await self.expect(FrameType.ACCEPTED))

    async def deliver(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        return decode_deliver(await self.expect(FrameType.DELIVER, timeout))

    async def expect_nothing(self) -> None:
        """Assert that nothing is on its way to us: the answer to a PING is the next frame.

        The relay answers a PING after whatever it had already sent on this connection,
        and it sends a commit's DELIVERs (with the publisher's ACCEPTED) and a presence
        change's ONLINE/OFFLINE in one step: so anything the relay did before it read
        the PING, and that reached us, comes first.
        """
        self.pings += 1
        token = b"expect_nothing %d" % self.pings
        await self.send(FrameType.PING, token)
        frame = await self.recv()
        assert (frame.type, frame.body) == (FrameType.PONG, token), (
            f"unexpected frame 0x{frame.type:02x} before the PONG"
        )

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def joined(port: int, group: Group, member: int, **kw: object) -> RawClient:
    client = await RawClient.connect(port, tls=kw.pop("tls", None))  # type: ignore[arg-type]
    await client.join(group, member, **kw)  # type: ignore[arg-type]
    return client


__all__ = ["ErrorCode", "Group", "RawClient", "RelayError", "joined"]
