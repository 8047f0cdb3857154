"""Where the relay's CPU per message goes, for the relay benchmark's report: the CPU
time of each of its threads per message (from /proc, on an unprofiled relay), and, under
cProfile in a short run, the event loop's time by stage (read, store, commit hand-off,
fan-out, socket writes, the rest) and the functions with the most own time. cProfile
inflates every Python call, so read its figures as shares of where time goes, not as
timings; the stage table turns each share into microseconds per message of the
unprofiled event loop's CPU."""

from __future__ import annotations

import os
import pstats
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.procs import stop_processes

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


# The relay's stages on its event loop, each a function whose cumulative time under
# cProfile is the stage's (what it calls included): (label, file, function). The fan-out
# is counted without the socket writes it makes, which have their own row.
STAGES = (
    ("read: frames split, each PUBLISH checked", "connection.py", "data_received"),
    ("store: batch deduped, chunk rows built and inserted", "sqlite_append.py", "insert"),
    ("commit handed to the writer thread", "base_events.py", "run_in_executor"),
    ("fan-out: ACCEPTED and DELIVER frames built", "rooms.py", "_dispatch"),
    ("socket writes (kernel time included)", "connection.py", "send"),
)
_WAITING = {"poll", "select", "sleep", "acquire", "wait"}


async def profiled(
    run_load: Callable[[int], Awaitable[None]],
    start_relay: Callable[[list[str]], tuple[subprocess.Popen[bytes], int]],
) -> tuple[list[tuple[str, float, int]], list[tuple[str, float]]]:
    """Run `run_load(port)` against a relay started with cProfile. Returns the top
    functions by own time: (function, share of the relay's profiled time, calls), and
    the share of each of `STAGES`, then of the rest (the event loop, tasks, futures)."""
    out = Path(tempfile.mkdtemp(prefix="ghostline-prof-")) / "relay.prof"
    proc, port = start_relay(["-m", "cProfile", "-o", str(out)])
    try:
        await run_load(port)
    finally:
        stop_processes([proc], 60)
    stats = pstats.Stats(str(out))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, name), (_, _, tt, _, _) in entries.items()
                if not any(w in name for w in _WAITING))  # fmt: skip
    rows = []
    for (path, line, name), (_, calls, tt, _, _) in entries.items():
        if any(w in name for w in _WAITING):
            continue  # the event loop waiting for work, not work
        where = name if path == "~" else f"{Path(path).name}:{line} {name}"
        rows.append((where, tt / total, calls))
    rows.sort(key=lambda r: -r[1])
    cumulative = {label: 0.0 for label, _, _ in STAGES}
    for (path, _, name), (_, _, _, ct, _) in entries.items():
        for label, file, function in STAGES:
            if Path(path).name == file and name == function:
                cumulative[label] += ct
    sends = cumulative[STAGES[-1][0]]
    cumulative[STAGES[3][0]] -= sends  # the fan-out without its socket writes
    stages = [(label, ct / total) for label, ct in cumulative.items()]
    stages.append(("the rest: event loop, tasks, futures", 1 - sum(c for _, c in stages)))
    return rows[:TOP], stages


def report(
    split: list[tuple[str, float, float]],
    top: list[tuple[str, float, int]],
    stages: list[tuple[str, float]],
) -> str:
    loop = next((user + system for name, user, system in split if name == "event loop"), 0.0)
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
        "The store's threads run SQLite's COMMIT (its fsync) and WAL checkpoints;",
        "system time of the event loop is mostly its socket sends and receives. The",
        "event loop's time by stage, under cProfile (a short run; cProfile slows",
        "Python calls more than C and the kernel, so read these as shares), and each",
        "share of the event loop's CPU per message above:",
        "",
        "| stage (event loop) | share | us/message |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {share * 100:.1f}% | {share * loop:.2f} |" for label, share in stages]
    lines += [
        "",
        f"The {TOP} functions with the most own time, as shares of the relay's profiled",
        "time without waiting:",
        "",
        "| function | share | calls |",
        "|---|---|---|",
    ]
    lines += [f"| `{where}` | {share * 100:.1f}% | {calls:,} |" for where, share, calls in top]
    return "\n".join(lines)
