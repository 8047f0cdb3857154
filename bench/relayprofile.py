"""Where the relay's CPU per message goes, for the relay benchmark's report: the CPU
time of each of its threads per message (from /proc, on an unprofiled relay); the event
loop's CPU by stage and one commit cycle part by part, measured by clocks around the
stages (bench/relaycycle.py) in a short run; and, under cProfile in another short run,
the functions with the most own time (cProfile inflates every Python call, so those are
shares of where time goes, not timings)."""

from __future__ import annotations

import json
import os
import pstats
import statistics
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.procs import stop_processes
from bench.relaycycle import LOADED

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


_WAITING = {"poll", "select", "sleep", "acquire", "wait"}


async def _loaded(
    run_load: Callable[[int], Awaitable[None]],
    start_relay: Callable[[list[str]], tuple[subprocess.Popen[bytes], int]],
    prefix: list[str],
) -> None:
    """`run_load(port)` against a relay started with Python options `prefix`, stopped
    after (so that what it writes on exit is written)."""
    proc, port = start_relay(prefix)
    try:
        await run_load(port)
    finally:
        stop_processes([proc], 60)


async def timed_cycles(
    run_load: Callable[[int], Awaitable[None]],
    start_relay: Callable[[list[str]], tuple[subprocess.Popen[bytes], int]],
) -> dict[str, Any]:
    """Run `run_load(port)` against a relay started under bench/relaycycle.py's clocks;
    what they measured (relaycycle.Clocks.summary)."""
    with tempfile.TemporaryDirectory(prefix="ghostline-cycle-") as where:
        out = Path(where) / "cycle.json"
        await _loaded(run_load, start_relay, ["-m", "bench.relaycycle", str(out)])
        summary: dict[str, Any] = json.loads(out.read_text())
    return summary


async def profiled(
    run_load: Callable[[int], Awaitable[None]],
    start_relay: Callable[[list[str]], tuple[subprocess.Popen[bytes], int]],
) -> list[tuple[str, float, int]]:
    """Run `run_load(port)` against a relay started with cProfile. Returns the top
    functions by own time: (function, share of the relay's profiled time, calls)."""
    with tempfile.TemporaryDirectory(prefix="ghostline-prof-") as where:
        out = Path(where) / "relay.prof"
        await _loaded(run_load, start_relay, ["-m", "cProfile", "-o", str(out)])
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
    return rows[:TOP]


def _stages(clocks: dict[str, Any]) -> list[tuple[str, float]]:
    """(stage, event-loop CPU us per message) from relaycycle's clocks."""
    n = max(1, clocks["messages"])
    cpu = clocks["cpu"]
    rest = clocks["loop_cpu"] - cpu["read"] - cpu["insert"] - cpu["fanout"]
    rows = [
        ("read: frames split, each PUBLISH checked (after the recv)", cpu["read"]),
        ("store: batch deduped, chunk rows built and inserted", cpu["insert"]),
        ("fan-out: ACCEPTED and DELIVER frames built", cpu["fanout"] - cpu["send"]),
        ("socket writes of the fan-out (kernel time included)", cpu["send"]),
        ("the rest: recv calls, the event loop, tasks, futures", max(0.0, rest)),
    ]
    return [(label, seconds / n * 1e6) for label, seconds in rows]


def _cycle(clocks: dict[str, Any]) -> list[tuple[str, float]]:
    """(part of a commit cycle, median ms) over the loaded cycles."""
    marks = clocks["cycles"]
    pairs = zip(marks, marks[1:], strict=False)  # each cycle with the next
    loaded = [(m, nxt) for m, nxt in pairs if m[0] >= LOADED and nxt[0] >= LOADED]
    if not loaded:
        return []

    def med(f: Callable[[list[float], list[float]], float]) -> float:
        return statistics.median(f(m, nxt) for m, nxt in loaded)

    return [
        ("messages in the commit", med(lambda m, _: m[0])),
        ("store: insert on the event loop", med(lambda m, _: (m[2] - m[1]) * 1e3)),
        ("until the writer thread starts the COMMIT", med(lambda m, _: (m[3] - m[2]) * 1e3)),
        ("COMMIT with its fsync (writer thread)", med(lambda m, _: (m[4] - m[3]) * 1e3)),
        ("until the event loop takes up the result", med(lambda m, _: (m[5] - m[4]) * 1e3)),
        ("fan-out: frames built and written", med(lambda m, _: (m[6] - m[5]) * 1e3)),
        ("until the next batch's insert starts", med(lambda m, n: (n[1] - m[6]) * 1e3)),
        ("the whole cycle", med(lambda m, n: (n[1] - m[1]) * 1e3)),
    ]


def cycle_median(clocks: dict[str, Any]) -> float | None:
    """The median loaded commit cycle in ms (None when no cycle was loaded)."""
    parts = dict(_cycle(clocks))
    return parts.get("the whole cycle")


def report(
    split: list[tuple[str, float, float]],
    top: list[tuple[str, float, int]],
    clocks: dict[str, Any],
) -> str:
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
        "event loop's CPU by stage, measured with the thread's CPU clock around each",
        "stage (bench/relaycycle.py) in a separate run of the same load (the clocks'",
        "own cost, about a microsecond per call, is in the rows they wrap):",
        "",
        "| stage (event loop) | us/message |",
        "|---|---|",
    ]
    stages = _stages(clocks)
    lines += [f"| {label} | {us:.2f} |" for label, us in stages]
    lines += [f"| all | {sum(us for _, us in stages):.2f} |"]
    cycle = _cycle(clocks)
    if cycle:
        lines += [
            "",
            "One commit cycle under that load, part by part (wall clock, the median of",
            f"{sum(1 for m in clocks['cycles'] if m[0] >= LOADED):,} cycles of at least "
            f"{LOADED} messages; in ms, the first row in messages):",
            "",
            "| part of the cycle | median |",
            "|---|---|",
        ]
        lines += [f"| {part} | {value:,.0f} |" if i == 0 else f"| {part} | {value:.2f} |"
                  for i, (part, value) in enumerate(cycle)]  # fmt: skip
    lines += [
        "",
        f"The {TOP} functions with the most own time under cProfile (another short run;",
        "cProfile slows Python calls more than C and the kernel, so read these as shares",
        "of the relay's profiled time without waiting, not as timings):",
        "",
        "| function | share | calls |",
        "|---|---|---|",
    ]
    lines += [f"| `{where}` | {share * 100:.1f}% | {calls:,} |" for where, share, calls in top]
    return "\n".join(lines)
