"""Idle members on one relay: 10,000 authenticated connections in 2,000 rooms, on the
SQLite relay and on a one-node cluster.

One `ghostline relay` (default per-address limits) and this process: it joins an honest
group of three and measures its light-load delivery latency (one message at a time, as
bench_relay.py's light load), then joins 10,000 more members (2,000 rooms of 5, from 200
loopback addresses 127.0.0.x: 50 connections and 10 new rooms per address, within the
defaults) that stay silent, and measures the group's latency again. Memory per idle
connection is the relay's resident memory grown over those 10,000 (from /proc), divided
by 10,000. Measured twice, one relay after the other: with a SQLite store, and as a
one-node cluster (`--cluster`) against one nats-server with JetStream started as the
cluster benchmark starts it. A cluster node subscribes to every room it hosts
(relay/cluster/hosting.py), and nats-server keeps those subscriptions too, so its
memory grown over the same 10,000 is given beside the node's.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.cluster_paced import STREAMS, SYNC
from bench.connkit import (
    close_all,
    cpu_seconds,
    fd_limit,
    join_idle,
    open_fds,
    raise_own_fd_limit,
    rss,
)
from bench.loadgen import Stats, connect_ghostline, light, pct
from bench.natskit import JetStreamServer
from bench.procs import launch_relay, stop_processes

TITLE = "Relay connections: 10,000 idle members on one relay or cluster node"

ROOMS, PER_ROOM = 2000, 5
NEW_ROOMS_PER_ADDRESS = 10  # within the default new-room burst of an address
SOURCES = ROOMS // NEW_ROOMS_PER_ADDRESS  # loopback addresses the members come from
MAX_CONNECTIONS = 12_000
GOAL_KIB = 20
SETTLE = 1.0  # seconds the relay is left alone after the joins, before it is measured
IDLE_WINDOW = 5.0  # seconds over which its CPU is measured while they idle
JOIN_LIMIT = 300.0  # seconds the joins may take in all before the benchmark gives up


def start(*backend: str) -> tuple[subprocess.Popen[bytes], int, list[str]]:
    """`ghostline relay` with `backend` (`--store PATH`, or `--cluster URL ...`) and its
    default per-address limits; returns it, its relay port and the lines it logs."""
    return launch_relay(
        [*backend, "--max-connections", str(MAX_CONNECTIONS), "--idle-timeout", "3600",
         "--log-level", "warning"]
    )  # fmt: skip


@dataclass
class Held:
    """What one relay process cost while it held the idle members (bytes, seconds, ms)."""

    count: int
    joined_in: float
    joined_cpu: float
    rss: tuple[int, int]  # resident memory before the joins, and with them held
    fds: tuple[int, int]
    limit: int  # the relay's soft limit on open files
    idle_cpu: float  # share of a core while they idle
    idle: tuple[float, float]  # the group's p50 / p99, relay otherwise idle
    loaded: tuple[float, float]  # the same with the members connected
    warned: bool  # the relay warned that its file limit is too low
    server_rss: tuple[int, int] | None = None  # nats-server's, for a cluster node
    server_cpu: float = 0.0  # nats-server's CPU-seconds over the joins

    def per_connection(self) -> float:
        """The relay's resident memory grown per idle connection, in KiB."""
        return _per_connection(self.rss, self.count)

    def server_per_connection(self) -> float | None:
        return None if self.server_rss is None else _per_connection(self.server_rss, self.count)

    def ratio(self) -> float:
        """The group's p50 with the members connected over its p50 without."""
        return self.loaded[0] / self.idle[0]


def _per_connection(grown: tuple[int, int], count: int) -> float:
    return (grown[1] - grown[0]) / count / 1024


async def hold(port: int, pid: int, lines: list[str], server_pid: int | None = None) -> Held:
    """Join ROOMS x PER_ROOM idle members to the relay `pid` listening on `port` around
    an honest group's light load, and measure what holding them costs it (and the
    nats-server `server_pid`, if given)."""
    stats = Stats()
    group = await connect_ghostline(port, 1, 3, stats)
    await light(group, stats, 100, False, 0)
    idle = (pct(stats.latencies, 50), pct(stats.latencies, 99))
    base_rss, base_fds = rss(pid), open_fds(pid)
    server_rss0 = rss(server_pid) if server_pid is not None else 0
    server_cpu0 = cpu_seconds(server_pid) if server_pid is not None else 0.0
    cpu0, started = cpu_seconds(pid), time.perf_counter()
    try:
        async with asyncio.timeout(JOIN_LIMIT):
            members = await join_idle(port, ROOMS, PER_ROOM, sources=SOURCES)
    except TimeoutError:
        raise TimeoutError(f"the idle members did not all join in {JOIN_LIMIT:.0f} s") from None
    joined_in, joined_cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu0
    server_cpu = cpu_seconds(server_pid) - server_cpu0 if server_pid is not None else 0.0
    try:
        await asyncio.sleep(SETTLE)
        held_rss, held_fds = rss(pid), open_fds(pid)
        server_rss = (server_rss0, rss(server_pid)) if server_pid is not None else None
        await light(group, stats, 100, False, 10_000)
        loaded = (pct(stats.latencies, 50), pct(stats.latencies, 99))
        idle_cpu0 = cpu_seconds(pid)
        await asyncio.sleep(IDLE_WINDOW)
        idle_cpu = (cpu_seconds(pid) - idle_cpu0) / IDLE_WINDOW
    finally:
        close_all(members)
        for m in group:
            if m.peer.transport is not None:
                m.peer.transport.close()
    return Held(
        len(members), joined_in, joined_cpu, (base_rss, held_rss), (base_fds, held_fds),
        fd_limit(pid), idle_cpu, idle, loaded, any("may open only" in x for x in lines),
        server_rss, server_cpu,
    )  # fmt: skip


async def on_sqlite(tmp: Path) -> Held:
    proc, port, lines = start("--store", str(tmp / "relay.sqlite"))
    try:
        return await hold(port, proc.pid, lines)
    finally:
        stop_processes([proc], 30)


async def on_cluster_node(tmp: Path) -> Held:
    server = JetStreamServer(tmp / "nats", sync=SYNC)
    server.start()
    assert server.proc is not None
    try:
        proc, port, lines = start(
            "--cluster", server.url, "--node-name", "a", "--cluster-streams", str(STREAMS)
        )
        try:
            return await hold(port, proc.pid, lines, server.proc.pid)
        finally:
            stop_processes([proc], 30)
    finally:
        stop_processes([server.proc], 30)


async def _run() -> str:
    own = raise_own_fd_limit()
    if own < ROOMS * PER_ROOM + 200:
        return f"Not run: this process may open only {own} files."
    tmp = Path(tempfile.mkdtemp(prefix="ghostline-bench-conn-"))
    try:
        started = time.perf_counter()
        sqlite = await on_sqlite(tmp)
        print(f"  SQLite relay: {sqlite}", file=sys.stderr)
        sqlite_took, started = time.perf_counter() - started, time.perf_counter()
        node = await on_cluster_node(tmp)
        print(f"  cluster node: {node}", file=sys.stderr)
        node_took = time.perf_counter() - started
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join(report(sqlite, node, (sqlite_took, node_took)))


def report(sqlite: Held, node: Held, took: tuple[float, float]) -> list[str]:
    both = (sqlite, node)

    def row(measure: str, cells: list[str], goal: str = "") -> str:
        return f"| {measure} | {' | '.join(cells)} | {goal} |"

    limits = [h.limit for h in both]
    names = ("SQLite relay", "cluster node")
    warned = [name for name, h in zip(names, both, strict=True) if h.warned]
    server = node.server_per_connection()
    assert node.server_rss is not None and server is not None
    return [
        f"{ROOMS * PER_ROOM:,} member connections ({ROOMS:,} rooms x {PER_ROOM}, from "
        f"{SOURCES} loopback addresses,",
        "default per-address limits), each joined (HELLO, PROVE verified, WELCOME) and then",
        "silent, held by one relay process while an honest group of three sends one 100-byte",
        "message at a time (each waiting for its store's commit and every delivery). Two",
        "relays, one after the other: a SQLite store (fsync per commit), and a one-node",
        f"cluster (`--cluster`, {STREAMS} streams) against one nats-server with JetStream",
        f"(`sync_interval: {SYNC}`), which also holds the node's subscription to each room it",
        "hosts: its memory grown over the same joins is given too.",
        "",
        "| measure | SQLite relay | cluster node | goal |",
        "|---|---|---|---|",
        row("member connections held", [f"{h.count:,}" for h in both], "10,000"),
        row("time to join them all (relay CPU)",
            [f"{sqlite.joined_in:.1f} s ({sqlite.joined_cpu:.1f} s)",
             f"{node.joined_in:.1f} s ({node.joined_cpu:.1f} s; nats-server "
             f"{node.server_cpu:.1f} s)"]),
        row("relay memory per idle connection",
            [f"**{h.per_connection():.1f} KiB** ({h.rss[0] / 2**20:.0f} -> "
             f"{h.rss[1] / 2**20:.0f} MiB resident)" for h in both], f"under {GOAL_KIB} KiB"),
        row("nats-server memory per idle connection",
            ["none", f"**{server:.1f} KiB** ({server * PER_ROOM:.1f} KiB per room hosted; "
             f"{node.server_rss[0] / 2**20:.0f} -> {node.server_rss[1] / 2**20:.0f} MiB "
             "resident)"]),
        row("relay file descriptors open / its limit",
            [f"{h.fds[1]:,} (was {h.fds[0]}) / {h.limit:,}" for h in both],
            f"--max-connections {MAX_CONNECTIONS:,} + 64"),
        row("relay CPU while they idle", [f"{h.idle_cpu * 100:.1f}% of a core" for h in both]),
        row("group latency p50 / p99, relay otherwise idle",
            [f"{h.idle[0]:.2f} / {h.idle[1]:.2f} ms" for h in both]),
        row("group latency p50 / p99, with them connected",
            [f"{h.loaded[0]:.2f} / {h.loaded[1]:.2f} ms" for h in both]),
        row("p50 with them / without", [f"**{h.ratio():.2f}x**" for h in both], "at most 2x"),
        row("seconds this part of the bench took", [f"{t:.0f} s" for t in took]),
        "",
        "Each relay raised its soft file limit to the hard limit at start "
        f"({' and '.join(f'{x:,}' for x in dict.fromkeys(limits))} here): it needs",
        "one descriptor per connection and 64 more (docs/DEPLOYMENT.md)."
        + "".join(f" The {name} warned that its limit is too low." for name in warned),
    ]  # fmt: skip


def run() -> str:
    return asyncio.run(_run())
