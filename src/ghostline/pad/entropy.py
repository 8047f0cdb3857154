"""Randomness for pad generation: os.urandom, optionally XOR-mixed with raw sources.

A pad is only as good as the bytes it came from. By default they come from
`os.urandom`, a CSPRNG: computationally strong, not information-theoretically random.
A user who has a hardware noise source (`/dev/hwrng`, or a file of raw samples taken
from one) can XOR it in with `--entropy PATH`: the result is at least as unpredictable
as the better of the two, so long as the raw source is not broken. To catch a broken
one (stuck, or badly biased) every raw source's bytes pass the continuous health
tests of NIST SP 800-90B section 4.4 before they are used:

- Repetition Count Test (4.4.1): C = 1 + ceil(-log2(alpha) / H)
- Adaptive Proportion Test (4.4.2): window W = 512 (non-binary samples),
  C = 1 + CRITBINOM(W, 2^-H, 1 - alpha)

with alpha = 2^-40 and H the min-entropy per byte the user asserts for the source.
The tests treat each byte as one sample and run over the whole stream, their state
carried from chunk to chunk, so a failure is found wherever it falls.

`os.urandom` itself is not health-tested: its output is already conditioned (the
kernel's CSPRNG), and 800-90B health tests apply to raw noise, where they would pass
any CSPRNG output anyway.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import EntropyError, UsageError

ALPHA_LOG2 = 40  # alpha = 2^-40: the false-alarm probability per test per sample
APT_WINDOW = 512  # SP 800-90B 4.4.2: W = 512 for non-binary samples
DEFAULT_ENTROPY_RATE = 8.0


def rct_cutoff(entropy_rate: float, *, alpha_log2: int = ALPHA_LOG2) -> int:
    """SP 800-90B 4.4.1: C = 1 + ceil(-log2(alpha) / H), with alpha = 2^-alpha_log2."""
    _check_rate(entropy_rate)
    return 1 + math.ceil(Fraction(alpha_log2) / Fraction(entropy_rate))


def apt_cutoff(
    entropy_rate: float, *, window: int = APT_WINDOW, alpha_log2: int = ALPHA_LOG2
) -> int:
    """SP 800-90B 4.4.2: C = 1 + CRITBINOM(W, 2^-H, 1 - alpha), computed exactly.

    CRITBINOM(W, p, a) is the smallest k with P(Binomial(W, p) <= k) >= a. The sum is
    done in integers: with p = a/b, P(X = i) = comb(W, i) * a^i * (b-a)^(W-i) / b^W.
    For a whole H, p = 2^-H exactly; otherwise p is the float 2^-H taken as an exact
    fraction.
    """
    _check_rate(entropy_rate)
    h = Fraction(entropy_rate)
    p = Fraction(1, 2 ** int(h)) if h.denominator == 1 else Fraction(2.0**-entropy_rate)
    a, b = p.numerator, p.denominator
    total = b**window
    # cdf >= 1 - alpha  <=>  cdf_numerator * 2^L >= (2^L - 1) * b^W
    target = (2**alpha_log2 - 1) * total
    cdf = 0
    for k in range(window + 1):
        cdf += math.comb(window, k) * a**k * (b - a) ** (window - k)
        if cdf << alpha_log2 >= target:
            return 1 + k
    return 1 + window  # unreachable: the full sum is b^W


def _check_rate(entropy_rate: float) -> None:
    if not 0 < entropy_rate <= 8:
        raise UsageError(f"entropy rate {entropy_rate} must be above 0 and at most 8 bits/byte")


class HealthTestFailure(EntropyError):
    """A raw randomness source failed an SP 800-90B health test; no kit was written."""

    hint = (
        "The source looks stuck or biased. Check the device, or assert a lower "
        "--entropy-rate only if you have measured it."
    )

    def __init__(self, test: str, source: str, position: int, detail: str) -> None:
        super().__init__(
            f"{source} failed the SP 800-90B {test} test at byte {position}: {detail}; "
            "no kit was written"
        )
        self.test = test  # "repetition count" or "adaptive proportion"
        self.source = source
        self.position = position


class HealthTests:
    """SP 800-90B 4.4 continuous health tests (RCT and APT) over one byte stream.

    Feed every byte of the source, in order, through `check(chunk)` before using it.
    It raises HealthTestFailure (an EntropyError) at the first failure, naming the test,
    the source and the byte position (0-based, from the start of the stream).
    """

    def __init__(self, source: str, entropy_rate: float = DEFAULT_ENTROPY_RATE) -> None:
        self.source = source
        self.entropy_rate = entropy_rate
        self.rct_cutoff = rct_cutoff(entropy_rate)
        self.apt_cutoff = apt_cutoff(entropy_rate)
        self.position = 0  # bytes checked so far
        # RCT state: the current sample value and how many times in a row it was seen.
        self._rct_value = -1
        self._rct_count = 0
        # APT state: the window's first sample, its count so far, samples left in window.
        self._apt_value = -1
        self._apt_count = 0
        self._apt_left = 0

    def check(self, chunk: bytes | bytearray | memoryview) -> None:
        samples = np.frombuffer(chunk, dtype=np.uint8)
        if samples.size == 0:
            return
        failures = []
        for test in (self._repetition_count, self._adaptive_proportion):
            try:
                test(samples)
            except HealthTestFailure as failure:
                failures.append(failure)
        if failures:  # both may fail in one chunk: report the first failing byte
            raise min(failures, key=lambda failure: failure.position)
        self.position += samples.size

    def _fail(self, test: str, at: int, detail: str) -> None:
        raise HealthTestFailure(test, self.source, at, detail)

    def _repetition_count(self, x: np.ndarray) -> None:
        cutoff = self.rct_cutoff
        # Runs of equal samples: their starts, and lengths (the first may continue the
        # run carried over from the previous chunk).
        starts = np.flatnonzero(x[1:] != x[:-1]) + 1
        starts = np.concatenate(([0], starts))
        lengths = np.diff(np.append(starts, x.size))
        carried = self._rct_count if int(x[0]) == self._rct_value else 0
        lengths[0] += carried
        bad = np.flatnonzero(lengths >= cutoff)
        if bad.size:
            i = int(bad[0])
            at = int(starts[i]) + cutoff - 1 - (carried if i == 0 else 0)
            self._fail(
                "repetition count",
                self.position + at,
                f"byte 0x{int(x[at]):02x} repeated {cutoff} times in a row "
                f"(cutoff {cutoff} for H={self.entropy_rate:g})",
            )
        self._rct_value = int(x[-1])
        self._rct_count = int(lengths[-1])

    def _adaptive_proportion(self, x: np.ndarray) -> None:
        cutoff, window = self.apt_cutoff, APT_WINDOW
        done = 0
        if self._apt_left:  # finish the window carried over from the previous chunk
            part = x[: self._apt_left]
            self._apt_window(part, self._apt_value, self._apt_count, 0)
            done = part.size
            self._apt_left -= part.size
            if self._apt_left:
                return
        whole = (x.size - done) // window
        if whole:
            windows = x[done : done + whole * window].reshape(whole, window)
            counts = np.count_nonzero(windows == windows[:, :1], axis=1)
            bad = np.flatnonzero(counts >= cutoff)
            if bad.size:
                w = int(bad[0])
                self._apt_window(windows[w, 1:], int(windows[w, 0]), 1, done + w * window + 1)
            done += whole * window
        if done < x.size:  # start a window that the next chunk will finish
            rest = x[done:]
            self._apt_value, self._apt_count = int(rest[0]), 0
            self._apt_left = window
            self._apt_window(rest, self._apt_value, 0, done)
            self._apt_left -= rest.size

    def _apt_window(self, part: np.ndarray, value: int, count: int, offset: int) -> None:
        """Count `value` in `part` (a run of one window's samples starting at `offset`)."""
        running = count + np.cumsum(part == value)
        over = np.flatnonzero(running >= self.apt_cutoff)
        if over.size:
            self._fail(
                "adaptive proportion",
                self.position + offset + int(over[0]),
                f"byte 0x{value:02x} made up {self.apt_cutoff} of a window of {APT_WINDOW} "
                f"samples (cutoff {self.apt_cutoff} for H={self.entropy_rate:g})",
            )
        self._apt_count = int(running[-1])


class _RawSource:
    """A device or file of raw samples, read in order and health-tested before use."""

    def __init__(self, path: Path, entropy_rate: float) -> None:
        self.path = path
        try:
            self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise UsageError(f"cannot open entropy source {path}: {exc.strerror}") from None
        mode = os.fstat(self._file.fileno()).st_mode
        self.is_device = stat.S_ISCHR(mode)
        kind = "device" if self.is_device else "file"
        self.name = f"{kind}:{path}"
        # Only a regular file has a known length; a device yields as much as is asked.
        self.size = os.fstat(self._file.fileno()).st_size if stat.S_ISREG(mode) else None
        self.tests = HealthTests(self.name, entropy_rate)

    def read(self, k: int) -> bytearray:
        buf = bytearray(k)
        view = memoryview(buf)
        got = 0
        while got < k:
            n = self._file.readinto(view[got:])
            if not n:
                raise EntropyError(
                    f"{self.name} ran out after {self.tests.position + got} bytes; "
                    "the kit set needs more. No kit was written.",
                    hint="Use a larger sample file or a smaller --size / --auth-keys.",
                )
            got += n
        self.tests.check(buf)
        return buf

    def close(self) -> None:
        self._file.close()


class MixedRandom:
    """`os.urandom(k) XOR source_1(k) XOR ...`: a `random_bytes` callable for kit.py.

    With no sources it is plain os.urandom. `description` names exactly the sources
    used, for the kit's `entropy` header field.
    """

    def __init__(
        self,
        sources: Sequence[str | os.PathLike[str]] = (),
        *,
        entropy_rate: float = DEFAULT_ENTROPY_RATE,
    ) -> None:
        _check_rate(entropy_rate)
        self.entropy_rate = entropy_rate
        self._sources: list[_RawSource] = []
        try:
            for path in sources:
                self._sources.append(_RawSource(Path(path).absolute(), entropy_rate))
        except BaseException:
            self.close()
            raise

    @property
    def description(self) -> str:
        if not self._sources:
            return "os.urandom"
        names = " xor ".join(["os.urandom", *(s.name for s in self._sources)])
        return f"{names} (H={self.entropy_rate:g}, SP800-90B RCT+APT)"

    def check_enough(self, total: int) -> None:
        """Fail early if a sample file is shorter than the `total` bytes needed."""
        for source in self._sources:
            if source.size is not None and source.size < total:
                raise EntropyError(
                    f"{source.name} holds {source.size} bytes but the kit set needs {total}",
                    hint="Use a larger sample file or a smaller --size / --auth-keys.",
                )

    def __call__(self, k: int) -> bytes:
        # Looked up on each call (not bound at import) so tests can substitute it.
        mixed = os.urandom(k)
        if not self._sources:
            return mixed
        acc = np.frombuffer(mixed, dtype=np.uint8).copy()
        for source in self._sources:
            np.bitwise_xor(acc, np.frombuffer(source.read(k), dtype=np.uint8), out=acc)
        return acc.tobytes()

    def close(self) -> None:
        for source in self._sources:
            source.close()

    def __enter__(self) -> MixedRandom:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
