"""The relay benchmark's report: each server's numbers in one scenario (`Result`), their
medians over the rounds, the table of both servers side by side with its goals, what
bounds the rate in the first scenario (`window_lines`), and the relay's CPU split
(bench/relayprofile.py) below it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.loadgen import BATCH, LIGHT_SAMPLES, WINDOW
from bench.relayprofile import cycle_median, report
from ghostline.relay.config import RelayLimits


@dataclass
class Result:
    rate: float
    p50: float
    p99: float
    light_p50: float
    light_p99: float
    cpu_us: float  # the server's CPU time per message published, loaded
    load_busy: float  # the load generator's CPU over the loaded run, in cores


Row = tuple[int, int, int, Result, Result]  # rooms, members, size, GhostLine, NATS


def median(results: list[Result]) -> Result:
    """Each field's median over the rounds (fields taken separately)."""
    return Result(
        *(statistics.median(getattr(r, f) for r in results) for f in Result.__dataclass_fields__)
    )


def render(
    rows: list[Row],
    rounds: int,
    splits: list[list[tuple[str, float, float]]],
    top: list[tuple[str, float, int]],
    clocks: dict[str, Any],
    deep: tuple[int, Result, Result],
) -> str:
    """The report's Markdown: `rows` one scenario each (medians), `splits` the relay's
    threads' CPU per message in the first scenario's rounds, `top` and `clocks` from its
    profiled and clocked short runs (bench/relayprofile.py), `deep` the first scenario
    with a deeper window: (batches, GhostLine, NATS)."""
    lines = [
        "Fan-out deliveries per second (one DELIVER to one member = one delivery) and",
        "delivery latency (publish to receipt). GhostLine stores every message in SQLite",
        "(WAL, synchronous=FULL, group commit) before ACCEPTED and DELIVER; NATS core",
        "stores nothing. One Python load generator, in its own process, drives both the",
        "same way (see bench/bench_relay.py); where it is the bottleneck, NATS's number is",
        "the load generator's ceiling rather than nats-server's. Loaded latency includes",
        f"queueing in the load generator; light-load latency is {LIGHT_SAMPLES} single",
        "messages, one at a time, each waiting for its fsync. Every number is the median",
        f"of {rounds} rounds, the servers taking turns.",
        "",
        "| rooms x members | message | GL deliveries/s "
        "| NATS deliveries/s | ratio GL/NATS | GL p50 / p99 loaded (ms) "
        "| NATS p50 / p99 loaded (ms) | GL p50 / p99 light (ms) "
        "| NATS p50 / p99 light (ms) | server CPU per message GL / NATS (us) "
        "| load generator busy GL / NATS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rooms, n, size, gl, nt in rows:
        lines.append(
            f"| {rooms} x {n} | {size} B | {gl.rate:,.0f} "
            f"| {nt.rate:,.0f} | **{gl.rate / nt.rate:.2f}x** | {gl.p50:.2f} / {gl.p99:.2f} "
            f"| {nt.p50:.2f} / {nt.p99:.2f} | {gl.light_p50:.2f} / {gl.light_p99:.2f} "
            f"| {nt.light_p50:.2f} / {nt.light_p99:.2f} | {gl.cpu_us:.2f} / {nt.cpu_us:.2f} "
            f"| {gl.load_busy:.0%} / {nt.load_busy:.0%} |"
        )
    lines += [
        "",
        "Goals: ratio at least 1.0x at 100 bytes with every message stored; light-load",
        "p99 under 1 ms. The light-load floor is one fsync of the store per message:",
        "on a disk whose fsync alone has a p99 above 1 ms, no stored relay meets it.",
        "Server CPU per message is the server process's user and system time (from",
        "/proc) over the loaded run, divided by the messages published. The load",
        "generator's busy figure is its own CPU over the loaded run, as a share of one",
        "core: it runs on one thread, so near 100% its rate is the most it can drive.",
        "",
        *window_lines(rows[0], cycle_median(clocks)),
        *deep_window_lines(rows[0], *deep),
    ]
    if splits:
        lines.append(report(_median_split(splits), top, clocks))
    return "\n".join(lines)


def window_lines(row: Row, cycle_ms: float | None) -> list[str]:
    """What bounds each server's rate in one scenario: the generator, or the window."""
    rooms, n, size, gl, nt = row
    window = rooms * n * WINDOW * BATCH[size]
    messages = gl.rate / (n - 1)
    confirmed = window / messages * 1e3
    relay_cores = gl.cpu_us * messages / 1e6
    cycles = (
        f"{confirmed / cycle_ms:.1f} of the relay's commit cycles ({cycle_ms:.2f} ms, below)"
        if cycle_ms
        else "the relay's commit cycles"
    )
    return [
        f"At {rooms} x {n}, {size} B, each member may have at most {WINDOW} batches of "
        f"{BATCH[size]} unconfirmed,",
        f"so at most {window:,} messages are in flight. The load generator was busy "
        f"{nt.load_busy:.0%} of a core",
        f"against NATS and {gl.load_busy:.0%} against GhostLine, and the relay process "
        f"used {relay_cores:.2f} of a core",
        f"(its CPU per message times its rate). At {messages:,.0f} messages per second a "
        "message is confirmed",
        f"on average at most {confirmed:.1f} ms after it is sent (Little's law), {cycles}:",
        "a batch that arrives while a commit is in flight waits for it, then for its own,",
        "so up to two cycles pass in the relay; the rest is outside its commit cycle (on",
        "the wire, in socket buffers, in the load generator). Where no process fills a",
        "core, that time bounds the rate.",
        "",
    ]


def deep_window_lines(row: Row, batches: int, gl: Result, nt: Result) -> list[str]:
    """The first scenario with `batches` unconfirmed per member: how far the table's
    ratio is the window's."""
    rooms, n, size, gl_table, nt_table = row
    messages = gl.rate / (n - 1)
    ceiling = (
        " Against NATS the load generator fills its core at either window: NATS's figure is"
        " the generator's ceiling, so no window shows more of nats-server."
        if min(nt.load_busy, nt_table.load_busy) >= 0.95
        else ""
    )
    return [
        f"The same scenario with {batches} batches unconfirmed per member instead of"
        f" {WINDOW} ({rooms * n * batches * BATCH[size]:,} messages in flight; median of"
        f" the rounds): GhostLine {gl.rate:,.0f} deliveries/s, NATS {nt.rate:,.0f}:"
        f" **{gl.rate / nt.rate:.2f}x** (with {WINDOW}: {gl_table.rate / nt_table.rate:.2f}x)."
        f" The load generator was busy {nt.load_busy:.0%} of a core against NATS and"
        f" {gl.load_busy:.0%} against GhostLine, and the relay used"
        f" {gl.cpu_us * messages / 1e6:.2f} of a core; GhostLine's loaded p50 / p99"
        f" {gl.p50:.2f} / {gl.p99:.2f} ms. GhostLine's own client does not wait for"
        " ACCEPTED before it sends more (the relay stops reading a connection with more than"
        f" {RelayLimits().max_inflight:,} PUBLISHes unconfirmed): the window is the"
        f" benchmark's choice, and the table keeps {WINDOW} batches, as in earlier runs.{ceiling}",
        "",
    ]


def _median_split(splits: list[list[tuple[str, float, float]]]) -> list[tuple[str, float, float]]:
    """Each thread's median over the rounds (threads matched by their place)."""
    width = min(len(s) for s in splits)
    return [
        (splits[0][i][0], statistics.median(s[i][1] for s in splits),
         statistics.median(s[i][2] for s in splits))
        for i in range(width)
    ]  # fmt: skip
