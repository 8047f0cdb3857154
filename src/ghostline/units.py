"""Byte sizes as people type them (`4MiB`, `512 KiB`, `1.5GiB`, `1000`) and print them."""

from __future__ import annotations

import re
from fractions import Fraction

from .errors import UsageError

_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*\Z")
# Decimal units are refused rather than guessed: "4MB" could mean 4*10^6 or 4*2^20.
_DECIMAL = {"k", "kb", "m", "mb", "g", "gb", "t", "tb"}


def parse_size(text: str, *, what: str = "size") -> int:
    """The number of bytes `text` names. Raises UsageError (one line) if it names none.

    Accepts a whole or decimal number with an optional binary unit: B, KiB, MiB, GiB,
    TiB (case-insensitive). The result must be a whole number of bytes.
    """
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(
            f"{what} {text!r} is not a size: write e.g. 4096, 512KiB, 4MiB or 1GiB",
        )
    number, unit = match.group(1), match.group(2).lower()
    if unit in _DECIMAL:
        raise UsageError(
            f"{what} {text!r}: use binary units (KiB, MiB, GiB), not {match.group(2)}",
        )
    if unit not in _UNITS:
        raise UsageError(f"{what} {text!r}: unknown unit {match.group(2)!r} (B, KiB, MiB, GiB)")
    value = Fraction(number) * _UNITS[unit]
    if value.denominator != 1:
        raise UsageError(f"{what} {text!r} is not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    """`n` bytes for a person: `4 MiB`, `1.33 MiB`, `512 B`."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            text = f"{value:.2f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{n} B"
