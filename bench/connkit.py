"""Many authenticated, idle member connections to one relay, for the connections
benchmark and its smaller test: each joins its room (HELLO, CHALLENGE, PROVE,
WELCOME) from one of several loopback source addresses (127.0.0.x), then stays silent.
And what the relay process costs, read from /proc."""

from __future__ import annotations

import asyncio
import os
import resource
import struct
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ghostline.protocol.frames import FrameType, Hello, Port, encode_frame, join_statement

_LEN = struct.Struct(">I")


class IdleMember(asyncio.Protocol):
    """Joins its room, then holds the connection and ignores whatever comes."""

    def __init__(self, room: bytes, index: int, roster: tuple[bytes, ...], key: Ed25519PrivateKey):
        self.room, self.index, self.roster, self.key = room, index, roster, key
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        hello = Hello(self.room, self.index, self.roster, 0).encode()
        transport.write(encode_frame(FrameType.HELLO, hello))

    def data_received(self, data: bytes) -> None:
        if self.joined.done():
            return  # idle: whatever comes is dropped
        buf = self._buf
        buf += data
        while len(buf) >= 5 and len(buf) >= 4 + _LEN.unpack_from(buf, 0)[0]:
            end = 4 + _LEN.unpack_from(buf, 0)[0]
            kind, body = buf[4], bytes(buf[5:end])
            del buf[:end]
            if kind == FrameType.CHALLENGE:
                statement = join_statement(Port.RELAY, self.room, self.index, body)
                assert self.transport is not None
                self.transport.write(encode_frame(FrameType.PROVE, self.key.sign(statement)))
            elif kind == FrameType.WELCOME:
                self._buf = bytearray()
                self.joined.set_result(None)
                return
            else:
                self.joined.set_exception(RuntimeError(f"relay answered 0x{kind:02x}: {body!r}"))
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(f"closed before WELCOME: {exc}"))


async def join_idle(
    port: int, rooms: int, per_room: int, *, sources: int = 1, at_once: int = 200
) -> list[IdleMember]:
    """`rooms` x `per_room` members joined and idle; the members of room r come from
    127.0.0.(2 + r % sources) (so each address stays within the per-address limits
    when sources >= rooms / 10). At most `at_once` handshakes are under way together."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(at_once)
    members: list[IdleMember] = []

    async def one(member: IdleMember, source: str) -> None:
        async with gate:
            await loop.create_connection(lambda: member, "127.0.0.1", port, local_addr=(source, 0))
            await asyncio.wait_for(member.joined, 120)

    firsts: list[Coroutine[Any, Any, None]] = []
    others: list[Coroutine[Any, Any, None]] = []
    for r in range(rooms):
        room = os.urandom(16)
        keys = [Ed25519PrivateKey.generate() for _ in range(per_room)]
        roster = tuple(k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for k in keys)
        for i in range(per_room):
            member = IdleMember(room, i, roster, keys[i])
            members.append(member)
            (others if i else firsts).append(one(member, f"127.0.0.{2 + r % sources}"))
    # Each room's first member registers it; the rest join a room the relay knows (a
    # member that finds its room new counts against its address's new-room limit).
    await asyncio.gather(*firsts)
    await asyncio.gather(*others)
    return members


def close_all(members: list[IdleMember]) -> None:
    for member in members:
        if member.transport is not None:
            member.transport.abort()


def raise_own_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss(pid: int) -> int:
    """Resident memory of process `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> int:
    """The soft limit on open files of process `pid`."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError("no limit")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
