"""The cluster fault scenario, shared by `make bench` and tests/relay/test_relay_faults.py.

Three nats-servers (a real NATS cluster on loopback, free ports) with JetStream, two
relay nodes with `--cluster-replicas 3`, and steady load from one room on each of the
cluster's streams (each member publishes one message every `PERIOD` seconds, its members
spread over both nodes, each ready to fail over to the other): so whichever server is
killed, it leads streams that are in use. Then, one after the other, each waiting
until every member delivers again: SIGKILL the nats-server that leads the most streams,
SIGKILL relay node a, restart the nats-server, restart node a. Counted at the end:

- ACCEPTED messages lost: accepted, but missing from what another member of the room
  received or from the room as a fresh reader reads it (goal 0);
- duplicates shown to members: a (sender, counter) DELIVERed twice to one member, or a
  DELIVER whose seq does not follow the last (goal 0);
- per fault, the seconds until every member has again had a message ACCEPTED and a
  message DELIVERed that it or the others sent after the fault (goal under 10 s);
- for the nats-server's kill, when JetStream had elected new leaders for the streams it
  led (its advisories), the part of the recovery that is JetStream's own.

Members are raw clients (real sockets, real Ed25519 keys, well-framed fake sealed
messages: the relay checks only framing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.natskit import Elections, NatsCluster, Node, wait
from ghostline.protocol.envelope import pack_header, read_envelope, sealed_length
from ghostline.protocol.frames import (
    FrameDecoder,
    FrameType,
    Hello,
    Port,
    Welcome,
    decode_accepted,
    decode_deliver,
    encode_frame,
    join_statement,
)
from ghostline.relay.cluster import DEFAULT_STREAMS
from ghostline.relay.cluster.layout import Layout

ROOMS = DEFAULT_STREAMS  # one room on each stream (the nodes run the default count)
MEMBERS = 3
PERIOD = 0.05  # seconds between one member's messages
RECOVERY_LIMIT = 30.0  # seconds a fault may take to heal before the scenario gives up
SETTLE_LIMIT = 60.0  # seconds for every outbox to drain and every member to catch up
_LEVEL = re.compile(r"level=(\w+) event=(\w+)")


# --- members --------------------------------------------------------------------------------


class Member:
    """A resilient raw client: an outbox resent after every reconnect, failover over the
    nodes' ports, resume from its cursor; it records every ACCEPTED and DELIVER."""

    def __init__(self, room: bytes, keys: list[Ed25519PrivateKey], index: int, ports: list[int]):
        self.room, self.keys, self.index, self.ports = room, keys, index, ports
        self.roster = tuple(
            k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for k in keys
        )
        self.outbox: dict[int, bytes] = {}
        self.sent_at: dict[int, float] = {}
        self.accepted: dict[int, tuple[int, float]] = {}  # counter -> (seq, when)
        self.delivered: list[tuple[int, int, int, float]] = []  # seq, sender, counter, when
        self.disorder = 0  # DELIVERs whose seq did not follow the last one
        self.cursor = 0
        self.next_counter = 0
        self.writer: asyncio.StreamWriter | None = None
        self.closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._life())

    async def stop(self) -> None:
        self.closing = True
        if self.writer is not None:
            self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def sealed(self, counter: int) -> bytes:
        body = counter.to_bytes(8, "big") + bytes(56)
        head = pack_header(self.room, self.index, len(self.keys), counter, counter * 64, 64)
        return head + body + bytes(sealed_length(64, len(self.keys)) - 42 - 64)

    def publish(self) -> None:
        counter = self.next_counter
        self.next_counter += 1
        self.outbox[counter] = self.sealed(counter)
        self.sent_at[counter] = time.monotonic()
        if self.writer is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.writer.write(encode_frame(FrameType.PUBLISH, self.outbox[counter]))

    async def _life(self) -> None:
        turn = self.index
        while not self.closing:
            port = self.ports[turn % len(self.ports)]
            turn += 1
            with contextlib.suppress(OSError, EOFError, asyncio.IncompleteReadError, ValueError):
                await self._session(port)
            self.writer = None
            if not self.closing:
                await asyncio.sleep(0.2)

    async def _session(self, port: int) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        decoder = FrameDecoder(1 << 24)
        frames: list = []

        async def frame() -> tuple[int, bytes]:
            while not frames:
                data = await asyncio.wait_for(reader.read(1 << 20), 30)
                if not data:
                    raise EOFError
                frames.extend(decoder.feed(data))
            f = frames.pop(0)
            return f.type, f.body

        hello = Hello(self.room, self.index, self.roster, self.cursor)
        writer.write(encode_frame(FrameType.HELLO, hello.encode()))
        kind, nonce = await frame()
        if kind != FrameType.CHALLENGE:
            raise EOFError
        statement = join_statement(Port.RELAY, self.room, self.index, nonce)
        writer.write(encode_frame(FrameType.PROVE, self.keys[self.index].sign(statement)))
        kind, body = await frame()
        if kind != FrameType.WELCOME:
            raise EOFError
        Welcome.decode(body)
        self.writer = writer
        for counter in sorted(set(self.outbox) - set(self.accepted)):
            writer.write(encode_frame(FrameType.PUBLISH, self.outbox[counter]))
        try:
            while True:
                kind, body = await frame()
                now = time.monotonic()
                if kind == FrameType.ACCEPTED:
                    seq, counter = decode_accepted(body)
                    self.accepted.setdefault(counter, (seq, now))
                elif kind == FrameType.DELIVER:
                    seq, sealed = decode_deliver(body)
                    env = read_envelope(sealed)
                    if seq != self.cursor + 1 and self.cursor:
                        self.disorder += seq <= self.cursor
                    self.delivered.append((seq, env.sender, env.counter, now))
                    self.cursor = max(self.cursor, seq)
                elif kind == FrameType.ERROR:
                    raise EOFError
        finally:
            writer.close()

    def all_accepted(self) -> bool:
        return len(self.accepted) == len(self.outbox)

    def first_ok_after(self, since: float, others: list[Member]) -> float | None:
        """When this member had both a message of its own sent after `since` ACCEPTED and a
        DELIVER of one the others sent after it (None: not yet)."""
        acc = [t for c, (_, t) in self.accepted.items() if self.sent_at[c] >= since]
        sent = {(o.index, c): t for o in others for c, t in o.sent_at.items()}
        dlv = [t for _, s, c, t in self.delivered if sent.get((s, c), 0.0) >= since]
        if not acc or not dlv:
            return None
        return max(min(acc), min(dlv))


def make_rooms(ports: list[int]) -> list[list[Member]]:
    rooms: list[list[Member]] = []
    layout = Layout(DEFAULT_STREAMS, b"")
    free = set(range(DEFAULT_STREAMS))
    while len(rooms) < ROOMS:
        room = os.urandom(16)
        if layout.stream_of(room) not in free:
            continue  # a stream that has its room already
        free.discard(layout.stream_of(room))
        keys = [Ed25519PrivateKey.generate() for _ in range(MEMBERS)]
        rooms.append([Member(room, keys, i, ports[i % 2 :] + ports[: i % 2]) for i in range(3)])
    return rooms


# --- the scenario ---------------------------------------------------------------------------


@dataclass
class FaultReport:
    accepted: int
    lost: int
    duplicates: int
    recovery: dict[str, float]  # fault -> seconds until every member delivered again
    placement: str  # where each stream's leader was before the faults
    logged: dict[str, int]  # "level event" -> how many such lines both nodes logged
    # seconds from the nats-server's kill to the last stream leader elected before every
    # member delivered again (None: no election seen)
    election: float | None = None

    def markdown(self) -> list[str]:
        worst = max(self.recovery.values())
        return [
            "Faults under steady load (three nats-servers, replicas 3, two relay nodes, "
            f"{ROOMS} rooms x {MEMBERS} members, one message per member every "
            f"{PERIOD * 1000:.0f} ms; bench/cluster_faults.py, also run by `make test`):",
            "",
            "| fault | seconds until every member delivers again |",
            "|---|---|",
            *(f"| {fault} | {seconds:.1f} |" for fault, seconds in self.recovery.items()),
            "",
            f"ACCEPTED messages: {self.accepted:,}; lost: **{self.lost}** (goal 0); duplicates "
            f"shown to members: **{self.duplicates}** (goal 0); slowest recovery: "
            f"**{worst:.1f} s** (goal under 10 s).",
            "",
            *self._election_lines(),
            "Warning and error lines both relay nodes logged meanwhile: "
            + (", ".join(f"`{k}` x{n}" for k, n in sorted(self.logged.items())) or "none")
            + ".",
            "",
            f"Stream leaders before the faults (the relay's log line): `{self.placement}`",
        ]

    def _election_lines(self) -> list[str]:
        if self.election is None:
            return ["No stream leader election was seen after the nats-server's kill.", ""]
        first = next(iter(self.recovery.values()))
        return [
            "After the nats-server's kill, JetStream had elected the last new stream leader"
            f" {self.election:.1f} s later (its advisories; JetStream's election timeout"
            f" is 4 to 9 s); every member delivered again {first - self.election:.1f} s"
            " after that.",
            "",
        ]


async def run_faults(root: Path) -> FaultReport:
    root.mkdir(parents=True, exist_ok=True)
    cluster = NatsCluster(root)
    for i in range(3):
        cluster.start(i)
    nodes = [Node(name, cluster.urls) for name in ("a", "b")]
    rooms: list[list[Member]] = []
    try:
        await cluster.ready()
        elections = await Elections.watch(cluster.urls)
        for node in nodes:
            node.start()
        for node in nodes:
            await node.serving()
        rooms = make_rooms([n.port for n in nodes])
        members = [m for room in rooms for m in room]
        for m in members:
            m.start()
        pump = asyncio.ensure_future(_pump(members))
        await wait(lambda: nodes[0].placement(), 30, "the stream leaders logged")
        # (the node spreads the leaders over the servers once it serves: wait for that,
        # but report what it logged if they do not settle)
        await _settle(lambda: "servers=3" in nodes[0].placement(), 15)
        placement = nodes[0].placement()
        recovery: dict[str, float] = {}
        await _recovered(rooms, time.monotonic(), RECOVERY_LIMIT)  # everyone under way
        victim = _busiest_server(placement)
        steps: list[tuple[str, Callable[[], None]]] = [
            (f"SIGKILL nats-server n{victim} (leader of the most streams)",
             lambda: cluster.kill(victim)),
            ("SIGKILL relay node a", nodes[0].kill),
            (f"restart nats-server n{victim}", lambda: cluster.start(victim)),
            ("restart relay node a", nodes[0].start),
        ]  # fmt: skip
        election = None
        for fault, act in steps:
            at = time.monotonic()
            act()
            done = await _recovered(rooms, at, RECOVERY_LIMIT)
            recovery[fault] = done - at
            if election is None:  # the nats-server's kill
                election = elections.last(at, done)
        await elections.close()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        # (bounded waits that do not fail: what never arrives is counted as lost below)
        await _settle(lambda: all(m.all_accepted() for m in members) and _caught_up(rooms))
        lost = sum(_lost(room) for room in rooms)
        duplicates = sum(_duplicates(m) for m in members)
        accepted = sum(len(m.accepted) for m in members)
        logged = Counter(
            f"{hit.group(1)} {hit.group(2)}"
            for node in nodes
            for line in node.lines
            if (hit := _LEVEL.search(line)) and hit.group(1) in ("warning", "error")
        )
        return FaultReport(accepted, lost, duplicates, recovery, placement, dict(logged), election)
    finally:
        for m in [m for room in rooms for m in room]:
            await m.stop()
        for node in nodes:
            node.kill()
        cluster.stop()


async def _settle(check: Callable[[], bool], limit: float = SETTLE_LIMIT) -> None:
    """Wait until `check()` holds or `limit` seconds passed (without failing)."""
    deadline = time.monotonic() + limit
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _pump(members: list[Member]) -> None:
    while True:
        for m in members:
            m.publish()
        await asyncio.sleep(PERIOD)


async def _recovered(rooms: list[list[Member]], since: float, limit: float) -> float:
    """When every member had an ACCEPTED and a DELIVER for messages sent after `since`."""
    times: list[float] = []

    def done() -> bool:
        times.clear()
        for room in rooms:
            for m in room:
                t = m.first_ok_after(since, [o for o in room if o is not m])
                if t is None:
                    return False
                times.append(t)
        return True

    await wait(done, limit, "every member delivering again")
    return max(times)


def _busiest_server(placement: str) -> int:
    """The nats-server (index) that leads the most streams, from a placement line."""
    counts = [0, 0, 0]
    for server in re.findall(r"@n(\d)", placement):
        counts[int(server)] += 1
    return counts.index(max(counts))


def _caught_up(rooms: list[list[Member]]) -> bool:
    for room in rooms:
        total = sum(len(m.accepted) for m in room)
        for m in room:
            if len(m.delivered) < total - len(m.accepted):
                return False
    return True


def _lost(room: list[Member]) -> int:
    """Accepted messages some other member of the room never received."""
    lost = 0
    for m in room:
        for other in room:
            if other is m:
                continue
            got = {(s, c) for _, s, c, _ in other.delivered}
            lost += sum((m.index, c) not in got for c in m.accepted)
    return lost


def _duplicates(m: Member) -> int:
    seen: set[tuple[int, int]] = set()
    dup = m.disorder
    for _, s, c, _ in m.delivered:
        dup += (s, c) in seen
        seen.add((s, c))
    return dup
