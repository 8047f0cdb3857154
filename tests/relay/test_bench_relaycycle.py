"""The relay benchmark's cycle clocks (bench/relaycycle.py) wrap relay functions by name:
run a real relay under them with a little load, and check that every commit was timed,
part by part, in order, and every stage's CPU counted."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/
from bench import bench_relay  # noqa: E402
from bench.loadgen import Stats, connect_ghostline, load  # noqa: E402
from bench.relayprofile import _cycle, _stages, timed_cycles  # noqa: E402

ROOMS, MEMBERS, EACH = 2, 3, 40


async def test_the_cycle_clocks_time_every_commit_of_a_real_relay_in_order() -> None:
    async def little_load(port: int) -> None:
        stats = Stats()
        members = await connect_ghostline(port, ROOMS, MEMBERS, stats)
        await load(members, stats, EACH, 100, False, 0)
        for m in members:
            if m.peer.transport is not None:
                m.peer.transport.close()

    tmp = Path(tempfile.mkdtemp(prefix="ghostline-cycle-test-"))
    clocks = await timed_cycles(
        little_load, lambda prefix: bench_relay._relay_for_profile(tmp, prefix)
    )

    assert clocks["messages"] == ROOMS * MEMBERS * EACH
    cycles = clocks["cycles"]
    assert cycles and sum(c[0] for c in cycles) == clocks["messages"]
    for count, *marks in cycles:
        assert count >= 1
        assert marks == sorted(marks)  # insert, COMMIT, fan-out, each start before end
    assert all(seconds > 0 for seconds in clocks["cpu"].values())
    assert clocks["loop_cpu"] >= sum(clocks["cpu"][k] for k in ("read", "insert", "fanout"))
    assert len(_stages(clocks)) == 5
    assert _cycle(clocks) == []  # no cycle of this little load is a loaded one
