"""The relay's commit cycle, timed: `python -m bench.relaycycle OUT ghostline-args...`
runs `ghostline ...` (a relay with its SQLite store) with clocks around the stages of
its event loop and its commit, and writes what they measured to OUT (JSON) when it
exits. For the relay benchmark's report: where the relay's CPU per message goes and
how long one commit cycle takes, part by part, measured with the CPU clock of the
thread (`time.thread_time`) and the wall clock, not a profiler's estimate.

The clocks wrap four functions by name, so a rename in the relay shows up here as a
failure to start rather than as wrong figures:
- `Connection.data_received`: a read's frames split and each PUBLISH checked (the recv
  itself happens before, in asyncio, and counts under "the rest");
- `sqlite_append.insert`: the batch deduped, its chunk rows built and inserted;
- `sqlite_append.commit`: the COMMIT with its fsync, on the store's writer thread;
- `RoomHub._dispatch`: the ACCEPTED and DELIVER frames built and written; within it,
  `Connection.send` (the socket writes) is also timed apart.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys
import time
from collections.abc import Callable
from typing import Any

# Cycles of at least this many messages are the loaded ones (the rest are warm-up and
# the last drops of a run).
LOADED = 100


class Clocks:
    def __init__(self) -> None:
        self.cpu = {"read": 0.0, "insert": 0.0, "fanout": 0.0, "send": 0.0}
        self.loop_first: float | None = None  # event loop CPU at the first read
        self.loop_last = 0.0  # and at the end of the last fan-out
        self.messages = 0
        # per commit: messages, then wall-clock marks: insert start, insert end,
        # COMMIT start (writer thread), COMMIT end, fan-out start, fan-out end
        self.cycles: list[list[float]] = []
        self._open: list[float] = []

    def summary(self) -> dict[str, Any]:
        loop = self.loop_last - (self.loop_first or 0.0)
        return {"messages": self.messages, "loop_cpu": loop, "cpu": self.cpu,
                "cycles": self.cycles}  # fmt: skip


def _cpu_timed(clocks: Clocks, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    clock = time.thread_time

    def timed(*args: Any) -> Any:
        start = clock()
        try:
            return fn(*args)
        finally:
            clocks.cpu[key] += clock() - start

    return timed


def install(clocks: Clocks) -> None:
    from ghostline.relay import connection, rooms, sqlite_append

    wall, cpu = time.perf_counter, time.thread_time
    insert, commit, dispatch = sqlite_append.insert, sqlite_append.commit, rooms.RoomHub._dispatch

    def timed_insert(*args: Any) -> Any:
        start, start_cpu = wall(), cpu()
        out = insert(*args)
        clocks.cpu["insert"] += cpu() - start_cpu
        clocks._open = [float(len(args[3])), start, wall()]
        return out

    def timed_commit(db: Any) -> None:
        start = wall()
        commit(db)
        clocks._open += [start, wall()]

    def timed_dispatch(self: Any, batch: Any, senders: Any, results: Any) -> None:
        start, start_cpu = wall(), cpu()
        dispatch(self, batch, senders, results)
        end_cpu = clocks.loop_last = cpu()
        clocks.cpu["fanout"] += end_cpu - start_cpu
        clocks.messages += len(batch)
        if len(clocks._open) == 5:
            clocks.cycles.append(clocks._open + [start, wall()])
        clocks._open = []

    sqlite_append.insert = timed_insert  # type: ignore[assignment]
    sqlite_append.commit = timed_commit
    rooms.RoomHub._dispatch = timed_dispatch  # type: ignore[method-assign]
    conn = connection.Connection
    received = _cpu_timed(clocks, "read", conn.data_received)

    def timed_read(self: Any, data: bytes) -> None:
        if clocks.loop_first is None:
            clocks.loop_first = cpu()
        received(self, data)

    conn.data_received = timed_read  # type: ignore[method-assign]
    conn.send = _cpu_timed(clocks, "send", conn.send)  # type: ignore[method-assign]


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    if args[:2] == ["-m", "ghostline"]:  # as procs.start_relay puts it after a prefix
        args = args[2:]
    sys.argv = ["ghostline", *args]
    clocks = Clocks()
    install(clocks)

    def write() -> None:
        with open(out, "w") as f:
            json.dump(clocks.summary(), f)

    atexit.register(write)
    runpy.run_module("ghostline", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
