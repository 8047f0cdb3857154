"""Idle members on one relay: 10,000 authenticated connections in 2,000 rooms.

One `ghostline relay` (SQLite store, default per-address limits) and this process: it
joins an honest group of three and measures its light-load delivery latency (one
message at a time, as bench_relay.py's light load), then joins 10,000 more members
(2,000 rooms of 5, from 200 loopback addresses 127.0.0.x: 50 connections and 10 new
rooms per address, within the defaults) that stay silent, and measures the group's
latency again. Memory per idle connection is the relay's resident memory grown over
those 10,000 (from /proc), divided by 10,000.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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
from bench.procs import ROOT, stop_processes

TITLE = "Relay connections: 10,000 idle members on one relay"

ROOMS, PER_ROOM, SOURCES = 2000, 5, 200
MAX_CONNECTIONS = 12_000
GOAL_KIB = 20


def start(store: Path) -> tuple[subprocess.Popen[bytes], int, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ghostline", "relay", "--port", "0", "--presence-port", "0",
         "--store", str(store), "--max-connections", str(MAX_CONNECTIONS),
         "--idle-timeout", "3600", "--log-level", "warning"],
        stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    port = 0
    while not port:
        line = proc.stderr.readline().decode()
        if not line:
            raise RuntimeError("the relay did not start")
        lines.append(line)
        if match := re.match(r"ghostline relay: relay listening on \S+:(\d+)", line):
            port = int(match.group(1))
    stream = proc.stderr

    def drain() -> None:
        for raw in stream:
            lines.append(raw.decode("utf-8", "replace"))

    threading.Thread(target=drain, daemon=True).start()
    return proc, port, lines


async def _run() -> str:
    own = raise_own_fd_limit()
    if own < ROOMS * PER_ROOM + 200:
        return f"Not run: this process may open only {own} files."
    tmp = Path(tempfile.mkdtemp(prefix="ghostline-bench-conn-"))
    proc, port, lines = start(tmp / "relay.sqlite")
    try:
        stats = Stats()
        group = await connect_ghostline(port, 1, 3, stats)
        await light(group, stats, 100, False, 0)
        idle = (pct(stats.latencies, 50), pct(stats.latencies, 99))
        base_rss, base_fds = rss(proc.pid), open_fds(proc.pid)
        cpu0, started = cpu_seconds(proc.pid), time.perf_counter()
        members = await join_idle(port, ROOMS, PER_ROOM, sources=SOURCES)
        joined_in, joined_cpu = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu0
        await asyncio.sleep(1.0)  # let the relay settle before it is measured
        count = len(members)
        held_rss, held_fds = rss(proc.pid), open_fds(proc.pid)
        await light(group, stats, 100, False, 10_000)
        loaded = (pct(stats.latencies, 50), pct(stats.latencies, 99))
        idle_cpu0 = cpu_seconds(proc.pid)
        await asyncio.sleep(5.0)
        idle_cpu = (cpu_seconds(proc.pid) - idle_cpu0) / 5.0
        limit = fd_limit(proc.pid)
        close_all(members)
        for m in group:
            if m.peer.transport is not None:
                m.peer.transport.close()
    finally:
        stop_processes([proc], 30)
        shutil.rmtree(tmp, ignore_errors=True)
    per_conn = (held_rss - base_rss) / count / 1024
    ratio = loaded[0] / idle[0]
    warned = any("may open only" in x for x in lines)
    print(f"  {count} members: {per_conn:.1f} KiB each, p50 {idle[0]:.2f} -> {loaded[0]:.2f} ms",
          file=sys.stderr)  # fmt: skip
    return "\n".join(
        [
            f"{count:,} member connections ({ROOMS:,} rooms x {PER_ROOM}, from {SOURCES} loopback",
            "addresses, default per-address limits), each joined (HELLO, PROVE verified,",
            "WELCOME) and then silent, held by one relay process (SQLite store) while an",
            "honest group of three sends one 100-byte message at a time (each waiting for its",
            "fsync and every delivery).",
            "",
            "| measure | value | goal |",
            "|---|---|---|",
            f"| member connections held | {count:,} | 10,000 |",
            f"| time to join them all (relay CPU) | {joined_in:.1f} s ({joined_cpu:.1f} s) | |",
            f"| relay memory per idle connection | **{per_conn:.1f} KiB** "
            f"({base_rss / 2**20:.0f} -> {held_rss / 2**20:.0f} MiB resident) "
            f"| under {GOAL_KIB} KiB |",
            f"| relay file descriptors open / its limit | {held_fds:,} (was {base_fds}) "
            f"/ {limit:,} | --max-connections {MAX_CONNECTIONS:,} + 64 |",
            f"| relay CPU while they idle | {idle_cpu * 100:.1f}% of a core | |",
            f"| group latency p50 / p99, relay otherwise idle | {idle[0]:.2f} / "
            f"{idle[1]:.2f} ms | |",
            f"| group latency p50 / p99, with the {count:,} connected | {loaded[0]:.2f} / "
            f"{loaded[1]:.2f} ms | |",
            f"| p50 with them / without | **{ratio:.2f}x** | at most 2x |",
            "",
            "The relay raised its soft file limit to the hard limit at start "
            f"({limit:,} here){'; it warned that this is too low' if warned else ''}: it needs",
            "one descriptor per connection and 64 more (docs/DEPLOYMENT.md).",
        ]
    )


def run() -> str:
    return asyncio.run(_run())
