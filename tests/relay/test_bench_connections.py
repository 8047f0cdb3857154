"""The connections benchmark's arithmetic and report (bench/bench_connections.py): memory
per idle connection is the resident growth over the members held, the latency ratio is
p50 with them over p50 without, and the report sets the SQLite relay and the cluster
node side by side, each measure with its goal."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/
from bench.bench_connections import GOAL_KIB, PER_ROOM, Held, report  # noqa: E402

MIB = 2**20
SQLITE = Held(
    count=1000, joined_in=0.4, joined_cpu=0.3, rss=(30 * MIB, 30 * MIB + 1000 * 6 * 1024),
    fds=(19, 1019), limit=20_000, idle_cpu=0.008, idle=(0.5, 1.0), loaded=(0.75, 3.0),
    warned=False,
)  # fmt: skip
NODE = replace(
    SQLITE, rss=(50 * MIB, 50 * MIB + 1000 * 8 * 1024), idle=(1.0, 2.0), loaded=(0.9, 4.0),
    server_rss=(20 * MIB, 20 * MIB + 1000 * 1536), server_cpu=1.0,
)  # fmt: skip


def test_memory_per_idle_connection_is_the_resident_growth_over_the_members_in_kib() -> None:
    assert SQLITE.per_connection() == 6.0
    assert NODE.per_connection() == 8.0
    assert NODE.server_per_connection() == 1.5


def test_a_sqlite_relay_has_no_nats_server_to_measure() -> None:
    assert SQLITE.server_per_connection() is None


def test_the_latency_ratio_is_the_p50_with_the_members_over_the_p50_without() -> None:
    assert SQLITE.ratio() == 1.5
    assert NODE.ratio() == 0.9


def test_the_report_sets_both_relays_side_by_side_with_each_goal() -> None:
    lines = report(SQLITE, NODE, (12.0, 17.0))
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| measure | SQLite relay | cluster node | goal |"
    assert all(line.count("|") == 5 for line in table), table
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table}
    assert rows["relay memory per idle connection"].startswith(
        "| relay memory per idle connection | **6.0 KiB** (30 -> 36 MiB resident) "
        "| **8.0 KiB** (50 -> 58 MiB resident) |"
    )
    assert rows["relay memory per idle connection"].endswith(f"| under {GOAL_KIB} KiB |")
    assert rows["nats-server memory per idle connection"].startswith(
        f"| nats-server memory per idle connection | none | **1.5 KiB** "
        f"({1.5 * PER_ROOM:.1f} KiB per room hosted; 20 -> 21 MiB resident) |"
    )
    assert rows["p50 with them / without"] == (
        "| p50 with them / without | **1.50x** | **0.90x** | at most 2x |"
    )
    assert rows["seconds this part of the bench took"].startswith(
        "| seconds this part of the bench took | 12 s | 17 s |"
    )
    assert not any("warned" in line for line in lines)


def test_the_report_names_the_relay_that_warned_its_file_limit_is_too_low() -> None:
    lines = report(SQLITE, replace(NODE, warned=True, limit=1024), (12.0, 17.0))
    text = " ".join(lines)
    assert "(20,000 and 1,024 here)" in text
    assert "The cluster node warned that its limit is too low." in text
