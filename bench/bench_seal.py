"""Sealing and opening speed, pure (no durable commit, no disk state), n = 3, for
suite 1 (format-1 kits) and suite 2 (format-2 kits, length step 32).

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

from ghostline.pad.kit import Kit
from ghostline.pad.kitset import create_kit_set
from ghostline.pad.seal import open_sealed, seal_with_kit
from ghostline.pad.seal2 import open_sealed2, seal_with_kit2
from ghostline.protocol.extents import Extents

TITLE = "Seal and open (pure, n = 3)"

N = 3
SMALL = 64
SIZES = (64 * 1024, 1024 * 1024)
STEP = 32
SMALL_GOAL_US = 10.0
BULK_GOAL_MBS = 1000.0  # at 1 MiB
BATCHES = 25
BATCH_SECONDS = 0.02


class _NothingAccepted:
    """Accepted state with nothing in it, for both suites: the store lookups are not
    what we measure (every range is the sender's)."""

    def has_counter(self, sender: int, counter: int) -> bool:
        return False

    def overlaps(self, sender: int, start: int, end: int) -> bool:
        return False

    def holds(self, sender: int, start: int, end: int) -> bool:
        return True

    def overlaps_accepted(self, start: int, end: int) -> bool:
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
        kit_sets = {}
        for fmt in (1, 2):
            out = Path(tmp) / str(fmt)
            out.mkdir()
            paths = create_kit_set(
                out,
                [f"m{i}" for i in range(N)],
                slice_len=2 * max(SIZES),
                auth_keys=64,
                group="bench",
                random_bytes=os.urandom,
                entropy="os.urandom (benchmark)",
                format=fmt,
                length_step=STEP if fmt == 2 else None,
            )
            kit_sets[fmt] = [Kit.open(p) for p in paths]
        try:
            return _measure(kit_sets)
        finally:
            for kits in kit_sets.values():
                for kit in kits:
                    kit.close()


def _sealers(kits: list[Kit], fmt: int) -> tuple[Callable[..., bytes], Callable[[bytes], object]]:
    sender, recipient = kits[0], kits[1]
    accepted = _NothingAccepted()
    if fmt == 1:
        return (
            lambda counter, plaintext: seal_with_kit(sender, counter, 0, plaintext),
            lambda sealed: open_sealed(recipient, sealed, accepted),
        )
    free = Extents([(0, sender.header.slice_len)])
    return (
        lambda counter, plaintext: seal_with_kit2(sender, counter, 0, plaintext, free=free),
        lambda sealed: open_sealed2(recipient, sealed, accepted),
    )


def _suite_rows(fmt: int, kits: list[Kit]) -> list[str]:
    seal, open_ = _sealers(kits, fmt)
    rows = []
    plaintext = os.urandom(SMALL)
    sealed = seal(1, plaintext)
    assert open_(sealed).plaintext == plaintext  # type: ignore[attr-defined]
    for name, fn in (("seal", lambda: seal(1, plaintext)), ("open", lambda: open_(sealed))):
        best, median = _us(_batches(fn))
        met = "yes" if best < SMALL_GOAL_US else "**no**"
        timing = f"{best:.2f} µs | {median:.2f} µs"
        rows.append(f"| {fmt} | {name} | {SMALL} B | {timing} | < 10 µs | {met} |")
    for size in SIZES:
        plaintext = os.urandom(size)
        sealed = seal(2, plaintext)
        assert open_(sealed).plaintext == plaintext  # type: ignore[attr-defined]
        label = f"{size // 1024} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        for name, fn in (
            ("seal", lambda p=plaintext: seal(2, p)),
            ("open", lambda s=sealed: open_(s)),
        ):
            best, median = _mbs(size, _batches(fn))
            if size == max(SIZES):
                goal_text = f"≥ {BULK_GOAL_MBS:.0f} MB/s"
                met = "yes" if best >= BULK_GOAL_MBS else "**no**"
            else:
                goal_text, met = "", ""
            speed = f"{best:,.0f} MB/s | {median:,.0f} MB/s"
            rows.append(f"| {fmt} | {name} | {label} | {speed} | {goal_text} | {met} |")
    return rows


def _measure(kit_sets: dict[int, list[Kit]]) -> str:
    rows = [row for fmt, kits in kit_sets.items() for row in _suite_rows(fmt, kits)]
    key = kit_sets[1][0].outbound_keys(1)[0]
    covered = os.urandom(42 + SMALL)
    tag = Poly1305.generate_tag(key, covered)
    for name, fn in (
        ("Poly1305 tag alone", lambda: Poly1305.generate_tag(key, covered)),
        ("Poly1305 verify alone", lambda: Poly1305.verify_tag(key, covered, tag)),
    ):
        best, median = _us(_batches(fn))
        size_text = f"{42 + SMALL} B (header + {SMALL})"
        rows.append(f"| | {name} | {size_text} | {best:.2f} µs | {median:.2f} µs | (floor) | |")

    return "\n".join(
        [
            "Pure sealing and opening in a group of 3: XOR with the group pad plus one "
            "Poly1305 tag per recipient (sealing computes 2, opening verifies 1). Suite 1 "
            "tags header || ciphertext with a 32-byte one-time key; suite 2 pads to a "
            f"multiple of {STEP} bytes (64 B becomes 96), decrypts before verifying and "
            "tags header || padded plaintext with R || S_j. Excludes the durable commit "
            "(SQLite, fsync), which costs far more per message, and the accepted-state "
            f"lookups. Best and median of {BATCHES} batches of about "
            f"{BATCH_SECONDS * 1000:.0f} ms each.",
            "",
            "| suite | operation | size | best | median | goal | met |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


if __name__ == "__main__":
    print(run())
