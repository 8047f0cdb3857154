"""The relay benchmarks' load generator: R rooms x M members, one connection per member,
on GhostLine's wire or NATS core pub/sub with the same bytes; each member publishes with
at most `WINDOW` batches unconfirmed (`load`), or one message at a time across the whole
system (`light`), and every receiver times each delivery from the send time inside it.
It runs in the benchmark's own process, on one thread, apart from the servers."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ghostline.protocol.envelope import pack_header, sealed_length
from ghostline.protocol.frames import FrameType, Hello, Port, encode_frame, join_statement

BATCH = {100: 32, 4096: 8}
WINDOW = 2  # batches a member may have unconfirmed (the table's; DEEP_WINDOW in bench_relay)
LIGHT_SAMPLES = 300
_LEN = struct.Struct(">I")
_TS = struct.Struct(">Q")
_TS_AT = 42  # the send time sits at the start of the ciphertext


@dataclass
class Stats:
    deliveries: int = 0
    expected: int = 0
    latencies: list[int] = field(default_factory=list)  # ns
    done: asyncio.Event = field(default_factory=asyncio.Event)
    record: bool = True

    def add(self, count: int, lat: list[int]) -> None:
        self.deliveries += count
        if self.record:
            self.latencies.extend(lat)
        if self.deliveries >= self.expected:
            self.done.set()


def sealed(room: bytes, sender: int, n: int, counter: int, size: int) -> bytes:
    head = pack_header(room, sender, n, counter, counter * size, size)
    body = _TS.pack(time.perf_counter_ns()) + bytes(size - 8)
    return head + body + bytes(sealed_length(size, n) - 42 - size)


# --- the two wire adapters of the load generator -------------------------------------


class _Peer(asyncio.Protocol):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.acks = 0  # ACCEPTED (GhostLine) or PONG (NATS)
        self.ack_event = asyncio.Event()
        self.control: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class GhostlinePeer(_Peer):
    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        now = time.perf_counter_ns()
        pos, end = 0, len(buf)
        lat: list[int] = []
        count = acks = 0
        while end - pos >= 5:
            size = _LEN.unpack_from(buf, pos)[0]
            if end - pos - 4 < size:
                break
            kind = buf[pos + 4]
            if kind == 0x83:
                count += 1
                lat.append(now - _TS.unpack_from(buf, pos + 13 + _TS_AT)[0])
            elif kind == 0x84:
                acks += 1
            else:
                self.control.put_nowait((kind, bytes(buf[pos + 5 : pos + 4 + size])))
            pos += 4 + size
        del buf[:pos]
        if acks:
            self.acks += acks
            self.ack_event.set()
        if count:
            self.stats.add(count, lat)


class NatsPeer(_Peer):
    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        now = time.perf_counter_ns()
        pos, end = 0, len(buf)
        lat: list[int] = []
        count = acks = 0
        while pos < end:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            if buf.startswith(b"MSG ", pos):
                size = int(buf[buf.rfind(b" ", pos, eol) + 1 : eol])
                start = eol + 2
                if end < start + size + 2:
                    break
                count += 1
                lat.append(now - _TS.unpack_from(buf, start + _TS_AT)[0])
                pos = start + size + 2
                continue
            line = bytes(buf[pos:eol])
            pos = eol + 2
            if line == b"PONG":
                acks += 1
            elif line == b"PING":
                self.write(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())
        del buf[:pos]
        if acks:
            self.acks += acks
            self.ack_event.set()
        if count:
            self.stats.add(count, lat)


# --- connecting -------------------------------------------------------------------------


@dataclass
class Member:
    peer: _Peer
    room: bytes
    index: int
    n: int
    subject: bytes = b""


async def connect_ghostline(port: int, rooms: int, members: int, stats: Stats) -> list[Member]:
    return await connect_spread([port], rooms, members, stats)


async def connect_spread(
    ports: list[int],
    rooms: int,
    members: int,
    stats: Stats,
    port_of: Callable[[bytes], int] | None = None,
    room_ids: Sequence[bytes] | None = None,
) -> list[Member]:
    """Join `members` per room, member i of each room on ports[i % len(ports)] (several
    relay nodes in the cluster bench, one relay here), or all on `port_of(room)`. The
    rooms are `rooms` random ids, or `room_ids` when given."""
    loop = asyncio.get_running_loop()
    out: list[Member] = []
    for room in room_ids if room_ids is not None else [os.urandom(16) for _ in range(rooms)]:
        keys = [Ed25519PrivateKey.generate() for _ in range(members)]
        roster = tuple(k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for k in keys)
        for index in range(members):
            port = ports[index % len(ports)] if port_of is None else port_of(room)
            _, peer = await loop.create_connection(lambda: GhostlinePeer(stats), "127.0.0.1", port)
            peer.write(encode_frame(FrameType.HELLO, Hello(room, index, roster, 0).encode()))
            kind, nonce = await peer.control.get()
            assert kind == FrameType.CHALLENGE, kind
            statement = join_statement(Port.RELAY, room, index, nonce)
            peer.write(encode_frame(FrameType.PROVE, keys[index].sign(statement)))
            kind, _ = await peer.control.get()
            assert kind == FrameType.WELCOME, kind
            out.append(Member(peer, room, index, members))
    return out


async def connect_nats(port: int, rooms: int, members: int, stats: Stats) -> list[Member]:
    loop = asyncio.get_running_loop()
    out: list[Member] = []
    for r in range(rooms):
        room = os.urandom(16)
        subject = f"room.{room.hex()}".encode()
        for index in range(members):
            _, peer = await loop.create_connection(lambda: NatsPeer(stats), "127.0.0.1", port)
            peer.write(
                b'CONNECT {"verbose":false,"pedantic":false,"echo":false,"protocol":1}\r\n'
                + b"SUB " + subject + b" " + str(r + 1).encode() + b"\r\nPING\r\n"
            )  # fmt: skip
            await wait_acks(peer, 1)
            peer.acks = 0
            out.append(Member(peer, room, index, members, subject))
    return out


async def wait_acks(peer: _Peer, count: int) -> None:
    while peer.acks < count:
        peer.ack_event.clear()
        await peer.ack_event.wait()


# --- the load pattern -------------------------------------------------------------------


def ghostline_frames(member: Member, start: int, count: int, size: int) -> bytes:
    return b"".join(
        encode_frame(FrameType.PUBLISH, sealed(member.room, member.index, member.n, c, size))
        for c in range(start, start + count)
    )


def nats_frames(member: Member, start: int, count: int, size: int) -> bytes:
    parts = []
    for c in range(start, start + count):
        msg = sealed(member.room, member.index, member.n, c, size)
        parts.append(b"PUB %s %d\r\n%s\r\n" % (member.subject, len(msg), msg))
    parts.append(b"PING\r\n")  # one PONG per batch: the batch reached the server
    return b"".join(parts)


async def publisher(
    member: Member, messages: int, batch: int, size: int, nats: bool, counter0: int,
    window: int = WINDOW,
) -> None:  # fmt: skip
    sent_batches = 0
    frames = nats_frames if nats else ghostline_frames
    sent = 0
    base_acks = member.peer.acks
    while sent < messages:
        count = min(batch, messages - sent)
        # at most `window` batches unconfirmed
        need = (sent_batches - window + 1) if nats else sent - (window - 1) * batch
        if need > 0:
            await wait_acks(member.peer, base_acks + need)
        member.peer.write(frames(member, counter0 + sent, count, size))
        sent += count
        sent_batches += 1


async def load(
    members: list[Member], stats: Stats, per_member: int, size: int, nats: bool, counter0: int,
    window: int = WINDOW,
) -> float:  # fmt: skip
    n = members[0].n
    stats.deliveries = 0
    stats.latencies = []
    stats.expected = len(members) * per_member * (n - 1)
    stats.done.clear()
    started = time.perf_counter()
    await asyncio.gather(
        *(publisher(m, per_member, BATCH[size], size, nats, counter0, window) for m in members)
    )
    await asyncio.wait_for(stats.done.wait(), 120)
    return time.perf_counter() - started


async def light(members: list[Member], stats: Stats, size: int, nats: bool, counter0: int) -> None:
    """One message at a time across the whole system, each waiting for all deliveries."""
    stats.latencies = []
    n = members[0].n
    frames = nats_frames if nats else ghostline_frames
    for i in range(LIGHT_SAMPLES):
        member = members[i % len(members)]
        stats.deliveries = 0
        stats.expected = n - 1
        stats.done.clear()
        member.peer.write(frames(member, counter0 + i, 1, size))
        await asyncio.wait_for(stats.done.wait(), 10)
        await asyncio.sleep(0.002)  # the pacing IS light load: an idle system between sends


def pct(values: list[int], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1e6
