"""Where the relay's CPU per message goes, for the relay benchmark's report: the CPU
time of each of its threads per message (from /proc, on an unprofiled relay), and the
functions that take the most time under cProfile in a short run (cProfile inflates
every Python call, so read its column as shares of where time goes, not as timings)."""

from __future__ import annotations

import os
import pstats
import signal
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

TOP = 12


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds of each thread of `pid`, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def thread_split(
    pid: int, before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
    messages: int,
) -> list[tuple[str, float, float]]:  # fmt: skip
    """(thread, user us/msg, system us/msg), the event loop's thread (the process's
    own id) first, then the store's threads, busiest first."""
    rows = []
    for tid, (user, system) in after.items():
        u0, s0 = before.get(tid, (0.0, 0.0))
        du, ds = (user - u0) / messages * 1e6, (system - s0) / messages * 1e6
        if du + ds > 0.005:
            rows.append((tid, du, ds))
    main = [r for r in rows if r[0] == str(pid)]
    rest = sorted((r for r in rows if r[0] != str(pid)), key=lambda r: -(r[1] + r[2]))
    return [("event loop", r[1], r[2]) for r in main] + [
        (f"store thread {i + 1}", r[1], r[2]) for i, r in enumerate(rest)
    ]


async def profiled(
    run_load: Callable[[int], Awaitable[None]],
    start_relay: Callable[[list[str]], tuple[subprocess.Popen[bytes], int]],
) -> list[tuple[str, float, int]]:
    """Run `run_load(port)` against a relay started with cProfile; the top functions by
    own time: (function, share of the relay's profiled time, calls)."""
    out = Path(tempfile.mkdtemp(prefix="ghostline-prof-")) / "relay.prof"
    proc, port = start_relay(["-m", "cProfile", "-o", str(out)])
    try:
        await run_load(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    stats = pstats.Stats(str(out))
    entries = stats.stats  # type: ignore[attr-defined]
    waiting = {"poll", "select", "sleep", "acquire", "wait"}
    total = sum(tt for (_, _, name), (_, _, tt, _, _) in entries.items()
                if not any(w in name for w in waiting))  # fmt: skip
    rows = []
    for (path, line, name), (_, calls, tt, _, _) in entries.items():
        if any(w in name for w in waiting):
            continue  # the event loop waiting for work, not work
        where = name if path == "~" else f"{Path(path).name}:{line} {name}"
        rows.append((where, tt / total, calls))
    rows.sort(key=lambda r: -r[1])
    return rows[:TOP]


def report(split: list[tuple[str, float, float]], top: list[tuple[str, float, int]]) -> str:
    lines = [
        "Where the relay's CPU goes at 10 x 3, 100 B (the first scenario above):",
        "",
        "| relay thread | user us/message | system us/message |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {user:.2f} | {system:.2f} |" for name, user, system in split]
    lines += [
        f"| all | {sum(r[1] for r in split):.2f} | {sum(r[2] for r in split):.2f} |",
        "",
        "The store's threads run SQLite's COMMIT (its fsync) and WAL checkpoints; system",
        "time of the event loop is mostly its socket sends and receives. Under cProfile",
        f"(a short run), the {TOP} functions with the most own time, as shares of the relay's",
        "profiled time without waiting:",
        "",
        "| function | share | calls |",
        "|---|---|---|",
    ]
    lines += [f"| `{where}` | {share * 100:.1f}% | {calls:,} |" for where, share, calls in top]
    return "\n".join(lines)
