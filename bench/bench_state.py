"""Durable local state: how many messages one member can seal and open per second.

Every number here includes the SQLite commit with fsync (WAL, synchronous=FULL) that
must happen before a sealed message may leave the process or an opened one may be
shown, plus zeroing and msync-ing the used pad and keys in the kit. `seal_many`
commits a group of messages in one transaction (what file transfer uses).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ghostline.pad.kitset import create_kit_set
from ghostline.state.member import MAX_SEAL_GROUP, Member

TITLE = "Durable state: sends and receives per second"

SIZE = 64
SINGLE = 2000
GROUP = MAX_SEAL_GROUP  # the most one commit holds (32)
GROUPS = 128  # 4096 messages


def _rate(count: int, seconds: float) -> tuple[str, str]:
    return f"{count / seconds:,.0f}", f"{seconds / count * 1e6:,.0f} µs"


def run() -> str:
    rows = []
    with tempfile.TemporaryDirectory(prefix="ghostline-bench-state-") as tmp:
        where = Path(tmp)
        os.environ["GHOSTLINE_HOME"] = str(where / "home")
        total = SINGLE + GROUP * GROUPS
        kits = create_kit_set(
            where,
            ["alice", "bob", "carol"],
            slice_len=total * SIZE,
            auth_keys=total,
            group="bench",
            random_bytes=os.urandom,
            entropy="os.urandom (bench)",
        )
        alice, bob = Member.open(kits[0]), Member.open(kits[1])
        payload = os.urandom(SIZE)

        started = time.perf_counter()
        single = [alice.seal(payload) for _ in range(SINGLE)]
        took = time.perf_counter() - started
        rows.append(("`Member.seal`, one transaction each", SINGLE, took, "≥ 1,000/s"))

        started = time.perf_counter()
        grouped = []
        for _ in range(GROUPS):
            grouped.extend(alice.seal_many([payload] * GROUP))
        took = time.perf_counter() - started
        rows.append((f"`Member.seal_many`, groups of {GROUP}", GROUP * GROUPS, took, "≥ 10,000/s"))

        started = time.perf_counter()
        for seq, entry in enumerate(single, start=1):
            bob.receive(seq, entry.sealed)
        took = time.perf_counter() - started
        rows.append(("`Member.receive`, one transaction each", SINGLE, took, "≥ 1,000/s"))
        del grouped
        alice.close()
        bob.close()
        os.environ.pop("GHOSTLINE_HOME", None)

    lines = [
        f"{SIZE}-byte payloads, group of 3 (2 tags per message), state and kit on the "
        "same disk as the system's temporary folder.",
        "",
        "| operation | messages | seconds | messages/s | per message | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, count, took, goal in rows:
        per_s, per_msg = _rate(count, took)
        lines.append(f"| {name} | {count:,} | {took:.2f} | {per_s} | {per_msg} | {goal} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
