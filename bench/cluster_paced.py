"""Measuring a cluster for the cluster benchmark: starting nodes, their CPU time
(/proc) and the chunks their streams stored, and the paced comparison of one node and
two at one offered load.

Flat out (bench_cluster.measure) every publisher keeps two batches in flight, so two
nodes run at another rate than one, with other batch sizes, on cores the load generator
also fills, and their CPU per delivery mixes what a second node costs with smaller
commits. Paced, every member sends at one steady rate, the same total for one node and
for two and well below what either delivers flat out; a one-node cluster and a two-node
cluster, each with a nats-server of its own, take turns, so both see the same machine.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats

from bench.loadgen import (
    GhostlinePeer,
    Member,
    Stats,
    connect_spread,
    ghostline_frames,
    load,
)
from bench.natskit import JetStreamServer
from bench.procs import start_relay, stop_processes
from ghostline.relay.cluster import DEFAULT_STREAMS
from ghostline.relay.cluster.layout import stream_name

# `always` (fsync before every JetStream acknowledgement, like the SQLite relay's commit)
# or `default` (nats-server's own 2-minute sync interval); BENCH_CLUSTER_SYNC=default.
SYNC = os.environ.get("BENCH_CLUSTER_SYNC", "always")
STREAMS = int(os.environ.get("BENCH_CLUSTER_STREAMS", str(DEFAULT_STREAMS)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The paced comparison: the same offered load (deliveries per second) for one node and
# two, well below what either delivers flat out, for PACED_SECONDS, PACED_ROUNDS times
# each, alternating (a one-node cluster and a two-node cluster side by side).
PACED_RATE = float(os.environ.get("BENCH_CLUSTER_PACED", "40000"))
PACED_SECONDS = 3.0
PACED_ROUNDS = int(os.environ.get("BENCH_CLUSTER_PACED_ROUNDS", "3"))
PACED_SCENARIO = (10, 3, 100)
PACED_TICK = 0.0005  # seconds between the pacer's looks at who is due to send


def start_node(nats_port: int, name: str) -> tuple[subprocess.Popen[bytes], int]:
    return start_relay(
        "--cluster", f"nats://127.0.0.1:{nats_port}", "--node-name", name,
        "--cluster-streams", str(STREAMS),
    )  # fmt: skip


def one_node_each(ports: list[int], rooms: int) -> tuple[list[bytes], Callable[[bytes], int]]:
    """`rooms` random room ids, all of each room's members on one node, the nodes taking
    turns (half the rooms on each of two), and the port of each room's node. Each room
    is then owned by the node its members use, whichever node the hash alone would pick
    (ownership.py): as when each group is given one node's address."""
    ids = [os.urandom(16) for _ in range(rooms)]
    port = {room: ports[i % len(ports)] for i, room in enumerate(ids)}
    return ids, port.__getitem__


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (/proc/PID/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


@dataclass
class Paced:
    """One configuration at the paced offered load, one round."""

    rate: float  # deliveries per second achieved (the offered rate if it kept up)
    cpu: float  # CPU-seconds of the measured processes per 100,000 deliveries
    split: list[float]  # `cpu` by process, in the order measured
    chunks: float  # JetStream messages (chunks) stored per 1,000 messages published


def close(members: list[Member]) -> None:
    for m in members:
        if m.peer.transport is not None:
            m.peer.transport.close()


async def stored_chunks(nats_port: int | None) -> int:
    """How many chunks the cluster's streams ever stored (their last sequences); 0 for
    the SQLite relay."""
    if nats_port is None:
        return 0
    nc = await nats.connect(f"nats://127.0.0.1:{nats_port}")
    try:
        js = nc.jetstream()
        total = 0
        for k in range(STREAMS):
            info = await js.stream_info(stream_name(k))
            total += info.state.last_seq
        return total
    finally:
        await nc.close()


async def paced(
    members: list[Member], pids: list[int], size: int, nats_port: int, counter0: int
) -> Paced:
    """CPU per delivery at PACED_RATE deliveries per second offered for PACED_SECONDS:
    each member sends its even share at a steady pace (member i offset by i / members
    of a message, so they do not all send at once), looked at every PACED_TICK, bounded
    in count and time; measured until the last delivery."""
    stats = _stats(members)
    n = members[0].n
    per_second = PACED_RATE / (len(members) * (n - 1))  # messages per member
    total = max(1, int(per_second * PACED_SECONDS))
    stats.deliveries, stats.latencies, stats.record = 0, [], False
    stats.expected = len(members) * total * (n - 1)
    stats.done.clear()
    sent = [0] * len(members)
    chunks0 = await stored_chunks(nats_port)
    before = [cpu_seconds([pid]) for pid in pids]
    started = time.perf_counter()
    while min(sent) < total:
        elapsed = time.perf_counter() - started
        for i, m in enumerate(members):
            due = min(total, int(per_second * elapsed + i / len(members)) + 1)
            if due > sent[i]:
                m.peer.write(ghostline_frames(m, counter0 + sent[i], due - sent[i], size))
                sent[i] = due
        await asyncio.sleep(PACED_TICK)
    await asyncio.wait_for(stats.done.wait(), PACED_SECONDS + 60)
    elapsed = time.perf_counter() - started
    after = [cpu_seconds([pid]) for pid in pids]
    stats.record = True
    chunks = (await stored_chunks(nats_port) - chunks0) / (len(members) * total) * 1000
    split = [(b - a) / stats.deliveries * 100_000 for a, b in zip(before, after, strict=True)]
    return Paced(stats.deliveries / elapsed, sum(split), split, chunks)


async def paced_comparison(tmp: Path) -> tuple[list[Paced], list[Paced], list[Paced]]:
    """PACED_ROUNDS paced rounds each of a one-node cluster and a two-node cluster (each
    with a nats-server of its own, started side by side), alternating, so both see the
    same machine: (one-node rounds, two-node rounds with each room's members spread over
    both nodes, two-node rounds with all of each room's members on the room's owner)."""
    rooms, n, size = PACED_SCENARIO
    servers = [JetStreamServer(tmp / f"paced-nats-{k}", sync=SYNC) for k in range(2)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for server in servers:
            server.start()
        one, one_port = start_node(servers[0].port, "a")
        procs.append(one)
        two = [start_node(servers[1].port, name) for name in "ab"]
        procs += [proc for proc, _ in two]
        await asyncio.sleep(3)  # both nodes' presence snapshots are out: they agree on owners
        two_pids = [*(proc.pid for proc, _ in two), _pid(servers[1])]
        ports = {name: port for name, (_, port) in zip("ab", two, strict=True)}
        on_one = one_node_each(list(ports.values()), rooms)
        configs = [
            (await connect_spread([one_port], rooms, n, Stats()),
             [one.pid, _pid(servers[0])], servers[0].port),
            (await connect_spread(list(ports.values()), rooms, n, Stats()),
             two_pids, servers[1].port),
            (await connect_spread([], rooms, n, Stats(), port_of=on_one[1], room_ids=on_one[0]),
             two_pids, servers[1].port),
        ]  # fmt: skip
        for members, _, _ in configs:
            await load(members, _stats(members), 50, size, False, 0)  # warm-up
        rounds: tuple[list[Paced], list[Paced], list[Paced]] = ([], [], [])
        for r in range(PACED_ROUNDS):
            for k, (members, pids, port) in enumerate(configs):
                counter0 = 5_000_000 + r * 1_000_000
                rounds[k].append(await paced(members, pids, size, port, counter0))
        for members, _, _ in configs:
            close(members)
        return rounds
    finally:
        stop_processes(procs, 20)
        stop_processes([s.proc for s in servers if s.proc is not None], 20)


def _pid(server: JetStreamServer) -> int:
    assert server.proc is not None
    return server.proc.pid


def _stats(members: list[Member]) -> Stats:
    peer = members[0].peer
    assert isinstance(peer, GhostlinePeer)
    return peer.stats


def paced_report(one: list[Paced], two: list[Paced], owners: list[Paced]) -> list[str]:
    rooms, n, size = PACED_SCENARIO
    a, b, c = _median(one), _median(two), _median(owners)
    ratios = ", ".join(f"{y.cpu / x.cpu:.2f}x" for x, y in zip(one, two, strict=True))
    owned = ", ".join(f"{y.cpu / x.cpu:.2f}x" for x, y in zip(one, owners, strict=True))
    return [
        "",
        f"The same load for both, paced ({rooms} x {n}, {size} B). The table's rates and"
        " CPU are flat out (every publisher keeps two batches in flight), so two nodes"
        " run at another rate than one, with other batch sizes, on cores the load"
        " generator also fills. Here every member sends at one steady rate instead, so"
        f" that all together offer {PACED_RATE:,.0f} deliveries per second"
        f" ({PACED_RATE / (n - 1):,.0f} messages) for {PACED_SECONDS:.0f} s, well below"
        " what either delivers flat out; a one-node cluster and a two-node cluster (each"
        f" with a nats-server of its own) take turns, {len(one)} rounds each. CPU-seconds"
        " of the relay nodes plus their nats-server (/proc) per 100,000 deliveries, from"
        " the first paced publish to the last delivery, the median round of each: one node"
        f" {a.cpu:.2f} (node {a.split[0]:.2f} + nats-server {a.split[1]:.2f}), two nodes"
        f" {b.cpu:.2f} ({b.split[0]:.2f} + {b.split[1]:.2f} + nats-server"
        f" {b.split[2]:.2f}): **{b.cpu / a.cpu:.2f}x** (goal at most 1.15x; round by round"
        f" {ratios}). Delivered: {a.rate:,.0f}/s and {b.rate:,.0f}/s (the offered rate"
        " when a configuration keeps up). Chunks stored per 1,000 messages: one node"
        f" {a.chunks:.0f}, two nodes {b.chunks:.0f}. At this load a commit carries few"
        " messages, so each chunk's fixed cost (a JetStream write, fsync, acknowledgement"
        " and republish) dominates, and how many chunks the timing yields moves the"
        " figures from round to round.",
        "",
        "The same two nodes, with all of each room's members on one node, half the rooms"
        " on each (as when each group is given one node's address; a room held on one"
        " node only is owned by it; a node receives"
        " the chunks of only the rooms it hosts, so neither node gets the other's):"
        f" {c.cpu:.2f} ({c.split[0]:.2f} + {c.split[1]:.2f} + nats-server"
        f" {c.split[2]:.2f}) CPU-seconds per 100,000 deliveries, **{c.cpu / a.cpu:.2f}x**"
        f" one node's (round by round {owned}); delivered {c.rate:,.0f}/s; chunks per"
        f" 1,000 messages {c.chunks:.0f}.",
    ]


def _median(rounds: list[Paced]) -> Paced:
    return sorted(rounds, key=lambda r: r.cpu)[len(rounds) // 2]
