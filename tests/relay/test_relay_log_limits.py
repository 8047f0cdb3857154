"""A flood of refused connections cannot flood the relay's log (issue 9 item 8): a few
lines per second per cause, and counts of the lines held back."""

from __future__ import annotations

import asyncio
import re
import time

from relaytest_client import RawClient

from ghostline.relay.logfmt import LogLimiter
from waiting import wait_until

FLOOD = 400
REFUSED = re.compile(r"event=refused .*reason=\"empty frame \(length 0\)\"")
HELD_BACK = re.compile(r"suppressed=(\d+)")
SUMMARY = re.compile(
    r"event=suppressed lines=\"refused code=1 reason=empty frame \(length N\)\" count=(\d+)"
)


def flood(port: int) -> None:
    async def one() -> None:
        client = await RawClient.connect(port)
        await client.send_raw(b"\x00\x00\x00\x00")  # an empty frame: ERROR 1, close
        await client.expect_closed()
        await client.close()

    async def run() -> None:
        for _ in range(FLOOD // 50):  # 50 at a time, bounded
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(50))), 30)

    asyncio.run(run())


def test_a_flood_of_refusals_logs_a_few_lines_a_second_and_counts_the_rest(relay_process, tmp_path):
    limits = LogLimiter()
    relay = relay_process(tmp_path / "relay.sqlite", "--max-connections-per-address", "1000")
    start = time.monotonic()
    flood(relay.relay_port)

    def accounted() -> int:
        lines = list(relay.stderr_lines)
        told = sum(1 for line in lines if REFUSED.search(line))
        held = sum(int(m.group(1)) for line in lines if REFUSED.search(line)
                   for m in [HELD_BACK.search(line)] if m)  # fmt: skip
        summed = sum(int(m.group(1)) for line in lines for m in [SUMMARY.search(line)] if m)
        return told + held + summed

    wait_until(lambda: accounted() == FLOOD, timeout=30, what="every refusal accounted for")
    elapsed = time.monotonic() - start
    lines = list(relay.stderr_lines)
    per_cause = [line for line in lines if REFUSED.search(line) or SUMMARY.search(line)]
    assert len(per_cause) <= limits.burst + limits.rate * elapsed + 1, (len(per_cause), elapsed)
    for event in ("connect", "disconnect"):  # the connections' own lines are limited too
        count = sum(1 for line in lines if f"event={event} " in line)
        assert count <= limits.burst + limits.rate * elapsed + 1, (event, count, elapsed)
    assert len(per_cause) < FLOOD / 4  # the point: far fewer lines than refusals


def test_the_limiter_counts_what_it_holds_back_per_key():
    limiter = LogLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.allow("b", 0.0) == 0  # another cause has its own budget
    assert limiter.allow("a", 0.5) == 2  # one line back after 0.5 s: two were held
    assert limiter.allow("a", 0.5) is None
    assert limiter.overdue(0.6) == []  # nothing to spare yet
    assert limiter.overdue(1.0) == [("a", 1)]
    assert limiter.overdue(10.0) == []  # and both forgotten once quiet
    assert limiter._keys == {}
