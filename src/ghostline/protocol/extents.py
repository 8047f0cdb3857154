"""Extents: a set of group-pad offsets, as sorted disjoint half-open ranges. Pure.

In format 2 a member seals only inside its *extents* (its initial range, minus what it
granted away, plus what was granted to it), and a receiver refuses a range outside the
sender's extents or overlapping anything it has accepted (docs/PROTOCOL.md sections 14
and 15). Both are sets of offsets that change by whole ranges; this value type holds
them. It is immutable: every change returns a new Extents, so a caller can compute the
state after a grant, commit it, and only then replace the old one.

Ranges are `[start, end)` with `0 <= start < end`; touching ranges merge, so the same
set always has the same representation (and `==` compares sets).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator


class Extents:
    """Sorted, disjoint, non-touching half-open ranges of non-negative integers."""

    __slots__ = ("_ranges", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        """The union of `ranges`; each must be `start < end`, and they must not overlap
        (touching is fine: they merge). Raises ValueError otherwise."""
        merged: list[tuple[int, int]] = []
        for start, end in sorted(ranges):
            _check(start, end)
            if merged and start < merged[-1][1]:
                raise ValueError(f"ranges overlap at [{start}, {min(end, merged[-1][1])})")
            if merged and start == merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        self._set(merged)

    def _set(self, ranges: list[tuple[int, int]]) -> None:
        self._ranges = tuple(ranges)
        self._starts = tuple(start for start, _ in ranges)

    @classmethod
    def _of(cls, ranges: list[tuple[int, int]]) -> Extents:
        """An Extents of ranges already sorted, disjoint and merged."""
        out = cls.__new__(cls)
        out._set(ranges)
        return out

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        return self._ranges

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._ranges)

    def __len__(self) -> int:
        """The number of ranges (not of offsets: that is `total`)."""
        return len(self._ranges)

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Extents) and self._ranges == other._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __repr__(self) -> str:
        return f"Extents({list(self._ranges)!r})"

    @property
    def total(self) -> int:
        """How many offsets the extents hold."""
        return sum(end - start for start, end in self._ranges)

    def _index(self, offset: int) -> int:
        """Index of the last range starting at or before `offset` (-1 if none)."""
        return bisect_right(self._starts, offset) - 1

    def contains(self, start: int, end: int) -> bool:
        """True when every offset of `[start, end)` is in the extents (False for an
        empty or inverted range: there is nothing to hold)."""
        if not 0 <= start < end:
            return False
        i = self._index(start)
        return i >= 0 and end <= self._ranges[i][1]

    def overlaps(self, start: int, end: int) -> bool:
        """True when some offset of `[start, end)` is in the extents."""
        if start >= end:
            return False
        i = self._index(end - 1)
        return i >= 0 and self._ranges[i][1] > start

    def add(self, start: int, end: int) -> Extents:
        """These extents plus `[start, end)`, which must not overlap them (ValueError)."""
        _check(start, end)
        if self.overlaps(start, end):
            raise ValueError(f"[{start}, {end}) overlaps the extents")
        ranges = list(self._ranges)
        i = self._index(start) + 1  # insert before ranges[i]
        if i > 0 and ranges[i - 1][1] == start:
            i -= 1
            start = ranges.pop(i)[0]
        if i < len(ranges) and ranges[i][0] == end:
            end = ranges.pop(i)[1]
        ranges.insert(i, (start, end))
        return Extents._of(ranges)

    def remove(self, start: int, end: int) -> Extents:
        """These extents minus `[start, end)`, which they must contain (ValueError)."""
        _check(start, end)
        if not self.contains(start, end):
            raise ValueError(f"[{start}, {end}) is not inside the extents")
        ranges = list(self._ranges)
        i = self._index(start)
        low, high = ranges.pop(i)
        pieces = [(a, b) for a, b in ((low, start), (end, high)) if a < b]
        ranges[i:i] = pieces
        return Extents._of(ranges)

    def first_fit(self, length: int) -> int | None:
        """The lowest `start` such that `[start, start + length)` is inside one range,
        or None when no range is that long. `length` must be at least 1."""
        if length < 1:
            raise ValueError("a run has at least one offset")
        for start, end in self._ranges:
            if end - start >= length:
                return start
        return None

    def largest(self) -> int:
        """The length of the longest range (0 when empty): the longest message that
        fits."""
        return max((end - start for start, end in self._ranges), default=0)


def _check(start: int, end: int) -> None:
    if not 0 <= start < end:
        raise ValueError(f"[{start}, {end}) is not a range (0 <= start < end)")
