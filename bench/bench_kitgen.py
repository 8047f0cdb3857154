"""How fast `pad new` makes a kit set, next to what the shell does with /dev/urandom.

Times `kit.create_kit_set` (the core of `ghostline pad new`, with os.urandom and the
default key count) for 3 members, and in the same run:

- A: `head -c SIZE /dev/urandom > FILE`, the issue's baseline: one copy of the group
  pad, not synced. The goal is at most 1.5x this.
- U: `os.urandom` drawing the random bytes a kit set needs, in 4 MiB reads, with no
  writing at all: the part of the work no implementation can skip.

A kit set is more than the pad: each of the n kits holds the whole group pad plus its
owner's 2(n-1) key regions, and every key region is random too. For n = 3 and 64-byte
average messages that is about 2x SIZE of random bytes drawn and 5x SIZE written.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ghostline.pad.kitset import CHUNK, create_kit_set, kit_set_random_len

TITLE = "Kit generation (`pad new`)"
NAMES = ["alice", "bob", "carol"]
SIZES = [(64 << 20, 2), (256 << 20, 1)]  # (group pad, repeats; the best run counts)
GOAL = 1.5


def _best(repeats: int, once: Callable[[], float]) -> float:
    return min(once() for _ in range(repeats))


def _time_kit_set(work: Path, size: int) -> tuple[float, int]:
    out = work / "kits"
    out.mkdir()
    slice_len = size // len(NAMES)
    started = time.perf_counter()
    paths = create_kit_set(
        out,
        NAMES,
        slice_len=slice_len,
        auth_keys=math.ceil(slice_len / 64),
        group="bench",
        random_bytes=os.urandom,
        entropy="os.urandom",
    )
    took = time.perf_counter() - started
    written = sum(p.stat().st_size for p in paths)
    shutil.rmtree(out)
    return took, written


def _time_head(work: Path, size: int) -> float:
    target = work / "head.bin"
    started = time.perf_counter()
    with open(target, "wb") as f:
        subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=f, check=True)
    took = time.perf_counter() - started
    target.unlink()
    return took


def _time_urandom(total: int) -> float:
    started = time.perf_counter()
    left = total
    while left:
        left -= len(os.urandom(min(CHUNK, left)))
    return time.perf_counter() - started


def run() -> str:
    rows = []
    notes = []
    with tempfile.TemporaryDirectory(prefix="ghostline-bench-") as tmp:
        work = Path(tmp)
        for size, repeats in SIZES:
            slice_len = size // len(NAMES)
            drawn = kit_set_random_len(len(NAMES), slice_len, math.ceil(slice_len / 64))
            results = [_time_kit_set(work, size) for _ in range(repeats)]
            kit_time = min(t for t, _ in results)
            written = results[0][1]
            head = _best(repeats, functools.partial(_time_head, work, size))
            urandom = _best(repeats, functools.partial(_time_urandom, drawn))
            mib = size >> 20
            rows.append(
                f"| {mib} MiB | {drawn / 2**20:.0f} MiB | {written / 2**20:.0f} MiB "
                f"| {kit_time:.2f} s | {written / kit_time / 1e6:.0f} MB/s "
                f"| {head:.2f} s | **{kit_time / head:.2f}x** "
                f"| {urandom:.2f} s | {kit_time / urandom:.2f}x |"
            )
            if kit_time / head > GOAL:
                notes.append(
                    f"{mib} MiB: {kit_time / head:.2f}x A, over the {GOAL}x goal; drawing the "
                    f"random bytes alone (U) is already {urandom / head:.2f}x A."
                )
    table = "\n".join(
        [
            "| group pad (n=3) | random drawn | kits written | create_kit_set | write rate "
            "| A: head -c SIZE | ratio to A | U: os.urandom only | ratio to U |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    verdict = (
        "\n".join(f"- {note}" for note in notes)
        if notes
        else f"- Every size meets the goal of at most {GOAL}x A."
    )
    return f"""\
Goal: making a kit set takes at most {GOAL}x `head -c SIZE /dev/urandom > FILE` (A).

{table}

{verdict}

What the ratios compare: A writes one unsynced copy of SIZE random bytes; a kit set
draws about 2x SIZE (the pad plus n(n-1) key regions of ceil(E/64)*32 bytes, E = SIZE/n)
and writes n kits of about 1.7x SIZE each, then fsyncs them. U is the floor for the
randomness alone (os.urandom in 4 MiB reads, nothing written). Kit generation draws
each random chunk once, writes it to every kit that holds it from a background thread
(os.urandom and os.pwrite release the GIL, so they overlap), and flushes the kits to
disk while they grow so the final fsync has little left to do. "write rate" is kit
bytes written per second.
"""
