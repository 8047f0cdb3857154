"""Sealing and opening speed, pure (no durable commit, no disk state), n = 3.

Each figure is timed in short batches (timeit-style loops of a bounded count); the
table shows the best batch, which is the least disturbed by other processes, and the
median, which shows how noisy the machine was. Poly1305 is reported alone as the floor:
a 64-byte seal in a group of 3 computes two tags, an open verifies one.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.poly1305 import Poly1305

from ghostline.kit import Kit
from ghostline.kitset import create_kit_set
from ghostline.seal import open_sealed, seal_with_kit

TITLE = "Seal and open (pure, n = 3)"

N = 3
SMALL = 64
SIZES = (64 * 1024, 1024 * 1024)
SMALL_GOAL_US = 10.0
BULK_GOAL_MBS = 1000.0  # at 1 MiB
BATCHES = 25
BATCH_SECONDS = 0.02


class _NothingAccepted:
    """An AcceptedLog with nothing in it: the store lookups are not what we measure."""

    def has_counter(self, sender: int, counter: int) -> bool:
        return False

    def overlaps(self, sender: int, start: int, end: int) -> bool:
        return False


def _batches(fn: Callable[[], object]) -> list[float]:
    """Seconds per call, one figure per batch; each batch runs about BATCH_SECONDS."""
    fn()
    started = time.perf_counter()
    fn()
    once = max(time.perf_counter() - started, 1e-7)
    loops = max(1, min(20_000, int(BATCH_SECONDS / once)))
    out = []
    for _ in range(BATCHES):
        started = time.perf_counter()
        for _ in range(loops):
            fn()
        out.append((time.perf_counter() - started) / loops)
    return out


def _us(times: list[float]) -> tuple[float, float]:
    return min(times) * 1e6, statistics.median(times) * 1e6


def _mbs(size: int, times: list[float]) -> tuple[float, float]:
    return size / min(times) / 1e6, size / statistics.median(times) / 1e6


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        paths = create_kit_set(
            Path(tmp),
            [f"m{i}" for i in range(N)],
            slice_len=2 * max(SIZES),
            auth_keys=64,
            group="bench",
            random_bytes=os.urandom,
            entropy="os.urandom (benchmark)",
        )
        kits = [Kit.open(p) for p in paths]
        try:
            return _measure(kits)
        finally:
            for kit in kits:
                kit.close()


def _measure(kits: list[Kit]) -> str:
    sender, recipient = kits[0], kits[1]
    accepted = _NothingAccepted()
    rows = []

    plaintext = os.urandom(SMALL)
    sealed = seal_with_kit(sender, 1, 0, plaintext)
    assert open_sealed(recipient, sealed, accepted).plaintext == plaintext
    key = sender.outbound_keys(1)[0]
    covered = sealed[: 42 + SMALL]
    tag = Poly1305.generate_tag(key, covered)
    for name, fn, goal in (
        ("seal", lambda: seal_with_kit(sender, 1, 0, plaintext), SMALL_GOAL_US),
        ("open", lambda: open_sealed(recipient, sealed, accepted), SMALL_GOAL_US),
        ("Poly1305 tag alone", lambda: Poly1305.generate_tag(key, covered), None),
        ("Poly1305 verify alone", lambda: Poly1305.verify_tag(key, covered, tag), None),
    ):
        best, median = _us(_batches(fn))
        goal_text = f"< {goal:.0f} µs" if goal else "(floor)"
        met = "" if goal is None else ("yes" if best < goal else "**no**")
        size_text = f"{SMALL} B" if goal else f"{42 + SMALL} B (header + {SMALL})"
        timing = f"{best:.2f} µs | {median:.2f} µs"
        rows.append(f"| {name} | {size_text} | {timing} | {goal_text} | {met} |")

    for size in SIZES:
        plaintext = os.urandom(size)
        sealed = seal_with_kit(sender, 2, 0, plaintext)
        assert open_sealed(recipient, sealed, accepted).plaintext == plaintext
        label = f"{size // 1024} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        for name, fn in (
            ("seal", lambda p=plaintext: seal_with_kit(sender, 2, 0, p)),
            ("open", lambda s=sealed: open_sealed(recipient, s, accepted)),
        ):
            best, median = _mbs(size, _batches(fn))
            if size == max(SIZES):
                goal_text = f"≥ {BULK_GOAL_MBS:.0f} MB/s"
                met = "yes" if best >= BULK_GOAL_MBS else "**no**"
            else:
                goal_text, met = "", ""
            speed = f"{best:,.0f} MB/s | {median:,.0f} MB/s"
            rows.append(f"| {name} | {label} | {speed} | {goal_text} | {met} |")

    return "\n".join(
        [
            "Pure sealing and opening in a group of 3: XOR with the sender's slice plus one "
            "Poly1305 tag per recipient (sealing computes 2, opening verifies 1). "
            "Excludes the durable commit (SQLite, fsync), which costs far more per message, "
            "and the accepted-state lookups. Best and median of "
            f"{BATCHES} batches of about {BATCH_SECONDS * 1000:.0f} ms each.",
            "",
            "| operation | size | best | median | goal | met |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )


if __name__ == "__main__":
    print(run())
