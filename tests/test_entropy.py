"""Randomness sources: SP 800-90B section 4.4 health tests, and XOR mixing into kits."""

from __future__ import annotations

import math
import os
import random
from fractions import Fraction
from pathlib import Path

import pytest

from ghostline.errors import EntropyError, UsageError
from ghostline.pad.entropy import (
    HealthTestFailure,
    HealthTests,
    MixedRandom,
    apt_cutoff,
    rct_cutoff,
)
from ghostline.pad.kit import Kit
from ghostline.pad.kitset import create_kit_set

# A stream with no repeated neighbours and every value equally often in any window.
CYCLE = bytes(range(256))


def feed(tests: HealthTests, data: bytes, chunk: int) -> None:
    for i in range(0, len(data), chunk):
        tests.check(data[i : i + chunk])


def binomial_tail(w: int, p: Fraction, c: int) -> Fraction:
    """P(X >= c) for X ~ Binomial(w, p), straight from the definition."""
    return sum((math.comb(w, i) * p**i * (1 - p) ** (w - i) for i in range(c, w + 1)), Fraction(0))


# --- cutoffs ---------------------------------------------------------------------------


def test_repetition_count_cutoff_is_six_for_full_entropy_bytes() -> None:
    # 800-90B 4.4.1 by hand: C = 1 + ceil(40 / 8) = 6.
    assert rct_cutoff(8) == 6


@pytest.mark.parametrize(("h", "cutoff"), [(2, 21), (3, 15), (0.5, 81), (7.9, 7)])
def test_repetition_count_cutoff_follows_the_formula_for_other_rates(h: float, cutoff: int) -> None:
    # 1 + ceil(40/2) = 21; 1 + ceil(13.33) = 15; 1 + ceil(80) = 81; 1 + ceil(5.06) = 7.
    assert rct_cutoff(h) == cutoff


@pytest.mark.parametrize(("h", "cutoff"), [(0.5, 410), (1, 311), (2, 177), (4, 62), (8, 13)])
def test_adaptive_proportion_cutoffs_match_the_published_table_for_alpha_2_to_minus_20(
    h: float, cutoff: int
) -> None:
    # SP 800-90B Table 2 (W = 512, alpha = 2^-20).
    assert apt_cutoff(h, alpha_log2=20) == cutoff


@pytest.mark.parametrize("h", [8, 4, 1])
def test_adaptive_proportion_cutoff_is_the_smallest_with_false_alarms_below_alpha(
    h: int,
) -> None:
    # C = 1 + CRITBINOM(W, 2^-H, 1 - alpha): P(count >= C) <= alpha < P(count >= C - 1).
    c = apt_cutoff(h)
    p, alpha = Fraction(1, 2**h), Fraction(1, 2**40)
    assert binomial_tail(512, p, c) <= alpha < binomial_tail(512, p, c - 1)


def test_adaptive_proportion_cutoff_for_full_entropy_bytes_is_nineteen() -> None:
    assert apt_cutoff(8) == 19


@pytest.mark.parametrize("h", [0, -1, 8.5])
def test_an_impossible_entropy_rate_is_a_usage_error(h: float) -> None:
    with pytest.raises(UsageError, match="entropy rate"):
        rct_cutoff(h)
    with pytest.raises(UsageError, match="entropy rate"):
        MixedRandom([], entropy_rate=h)


# --- repetition count test -------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 3, 1000, 1 << 20])
def test_repetition_count_trips_on_a_stuck_source_at_the_sixth_equal_byte(chunk: int) -> None:
    data = CYCLE * 4 + b"\x42" * 10 + CYCLE
    tests = HealthTests("file:/stuck", 8)
    with pytest.raises(EntropyError) as caught:
        feed(tests, data, chunk)
    # The run starts at 1024 (CYCLE ends with 0xff, so it continues nothing): the sixth
    # 0x42 is at 1024 + 5.
    message = str(caught.value)
    assert "repetition count" in message
    assert "file:/stuck" in message
    assert "at byte 1029" in message


def test_repetition_count_counts_a_run_that_continues_the_previous_byte() -> None:
    data = CYCLE + b"\xff" * 5  # CYCLE ends with 0xff: a run of 6, the last at 260
    with pytest.raises(EntropyError, match="at byte 260"):
        feed(HealthTests("s", 8), data, 256)


def test_five_equal_bytes_in_a_row_pass_at_full_entropy() -> None:
    tests = HealthTests("s", 8)
    feed(tests, CYCLE + b"\x00" * 5 + CYCLE[1:], 7)
    assert tests.position == 256 + 5 + 255


def test_a_lower_asserted_rate_tolerates_longer_runs() -> None:
    data = CYCLE[:100] + b"\x07" * 20 + CYCLE[9:]  # 0x07 never borders the run
    feed(HealthTests("s", 2), data, 50)  # cutoff 21: passes
    with pytest.raises(EntropyError, match="repetition count"):
        feed(HealthTests("s", 4), data, 50)  # cutoff 11: fails


# --- adaptive proportion test -----------------------------------------------------------


def biased_window(value: int, every: int) -> bytes:
    """512 samples starting with `value`, with `value` again every `every` samples and
    never twice in a row, others cycling."""
    others = [b for b in range(256) if b != value]
    return bytes(value if i % every == 0 else others[i % len(others)] for i in range(512))


@pytest.mark.parametrize("chunk", [1, 100, 512, 4096])
def test_adaptive_proportion_trips_on_a_biased_source(chunk: int) -> None:
    # Window 2 (bytes 1024..1535) holds 0xaa at 1024, 1034, ...: the 19th is 1024 + 180.
    data = CYCLE * 4 + biased_window(0xAA, 10) + CYCLE * 2
    with pytest.raises(EntropyError) as caught:
        feed(HealthTests("device:/dev/hwrng", 8), data, chunk)
    message = str(caught.value)
    assert "adaptive proportion" in message
    assert "device:/dev/hwrng" in message
    assert "at byte 1204" in message


def test_adaptive_proportion_windows_start_at_multiples_of_512() -> None:
    # The same bias starting mid-window is split over two windows, neither with 19.
    data = CYCLE + biased_window(0xAA, 10) + CYCLE * 3
    tests = HealthTests("s", 8)
    feed(tests, data, 300)
    assert tests.position == len(data)  # every sample checked, none refused


def test_adaptive_proportion_counts_only_the_first_sample_of_each_window() -> None:
    # 0xaa is frequent but the window starts with 0x00: nothing to count.
    window = bytes([0]) + biased_window(0xAA, 10)[1:]
    tests = HealthTests("s", 8)
    feed(tests, window * 3, 512)
    assert tests.position == 3 * 512  # every sample checked, none refused


def test_a_good_source_passes_the_health_tests(rng: random.Random) -> None:
    tests = HealthTests("s", 8)
    feed(tests, rng.randbytes(1 << 20), 65536 + 1)
    assert tests.position == 1 << 20


# --- sources and mixing --------------------------------------------------------------


def test_without_sources_the_randomness_is_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "urandom", lambda k: b"\x01" * k)
    with MixedRandom() as randomness:
        assert randomness.description == "os.urandom"
        assert randomness(5) == b"\x01" * 5


def test_a_file_source_is_xored_with_os_urandom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rng: random.Random
) -> None:
    samples = tmp_path / "samples.bin"
    data = rng.randbytes(1000)
    samples.write_bytes(data)
    monkeypatch.setattr(os, "urandom", lambda k: b"\xff" * k)
    with MixedRandom([samples]) as randomness:
        got = randomness(600) + randomness(400)
        assert randomness.description == (f"os.urandom xor file:{samples} (H=8, SP800-90B RCT+APT)")
    assert got == bytes(b ^ 0xFF for b in data)


def test_a_kit_made_with_a_file_source_and_zero_urandom_holds_the_file_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rng: random.Random
) -> None:
    n, slice_len, auth_keys = 3, 2000, 10
    needed = n * slice_len + n * (n - 1) * auth_keys * 32
    samples = tmp_path / "samples.bin"
    data = rng.randbytes(needed)
    samples.write_bytes(data)
    monkeypatch.setattr(os, "urandom", lambda k: bytes(k))
    out = tmp_path / "kits"
    out.mkdir()
    with MixedRandom([samples]) as randomness:
        paths = create_kit_set(
            out,
            ["a", "b", "c"],
            slice_len=slice_len,
            auth_keys=auth_keys,
            group="",
            random_bytes=randomness,
            entropy=randomness.description,
            chunk_size=1500,
        )
    with Kit.open(paths[1], writable=False) as kit:
        assert bytes(kit.region(kit.layout.base, n * slice_len)) == data[: n * slice_len]
        # Pair regions follow in order 0->1, 0->2, 1->0, ...: 0->1 is b's first inbound.
        assert kit.inbound_key(0, 0) == data[n * slice_len : n * slice_len + 32]
        assert kit.header.entropy.startswith("os.urandom xor file:")


def test_two_sources_are_both_mixed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rng: random.Random
) -> None:
    first, second = tmp_path / "1.bin", tmp_path / "2.bin"
    a, b = rng.randbytes(100), rng.randbytes(100)
    first.write_bytes(a)
    second.write_bytes(b)
    monkeypatch.setattr(os, "urandom", lambda k: bytes(k))
    with MixedRandom([first, second], entropy_rate=6) as randomness:
        assert randomness(100) == bytes(x ^ y for x, y in zip(a, b, strict=True))
        assert randomness.description == (
            f"os.urandom xor file:{first} xor file:{second} (H=6, SP800-90B RCT+APT)"
        )


def test_a_device_source_is_named_as_a_device() -> None:
    with MixedRandom(["/dev/urandom"]) as randomness:
        assert len(randomness(4096)) == 4096
        assert randomness.description.startswith("os.urandom xor device:/dev/urandom ")
        randomness.check_enough(1 << 40)  # a device has no length to check


def test_a_stuck_file_source_stops_kit_creation_and_leaves_nothing(tmp_path: Path) -> None:
    samples = tmp_path / "stuck.bin"
    samples.write_bytes(CYCLE * 8 + bytes(300))
    out = tmp_path / "kits"
    out.mkdir()
    with MixedRandom([samples]) as randomness, pytest.raises(EntropyError) as caught:
        create_kit_set(
            out,
            ["a", "b"],
            slice_len=1024,
            auth_keys=4,
            group="",
            random_bytes=randomness,
            entropy=randomness.description,
            chunk_size=1000,
        )
    assert "repetition count" in str(caught.value)
    assert f"file:{samples}" in str(caught.value)
    assert "at byte 2053" in str(caught.value)
    assert list(out.iterdir()) == []


def test_a_file_source_shorter_than_needed_is_a_clear_error(
    tmp_path: Path, rng: random.Random
) -> None:
    samples = tmp_path / "short.bin"
    samples.write_bytes(rng.randbytes(100))
    with MixedRandom([samples]) as randomness:
        with pytest.raises(EntropyError, match="holds 100 bytes but the kit set needs 101"):
            randomness.check_enough(101)
        randomness(60)
        with pytest.raises(EntropyError, match="ran out after 100 bytes"):
            randomness(60)


def test_a_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot open entropy source"):
        MixedRandom([tmp_path / "nope"])


def test_when_both_tests_fail_in_one_chunk_the_earlier_failure_is_reported() -> None:
    # The biased window trips APT at byte 180; a stuck run trips RCT later, at 405.
    data = bytearray(biased_window(0xAA, 10))
    data[400:406] = b"\x01" * 6
    with pytest.raises(HealthTestFailure) as caught:
        HealthTests("s", 8).check(bytes(data))
    assert (caught.value.test, caught.value.position) == ("adaptive proportion", 180)
