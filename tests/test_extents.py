"""Extents: sorted disjoint half-open ranges, checked against a plain set of offsets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghostline.protocol.extents import Extents


def offsets(extents: Extents) -> set[int]:
    return {i for start, end in extents for i in range(start, end)}


def test_touching_ranges_merge_so_equal_sets_are_equal() -> None:
    assert Extents([(5, 10), (0, 5), (20, 30)]).ranges == ((0, 10), (20, 30))
    assert Extents([(0, 10)]) == Extents([(0, 4), (4, 10)])
    assert Extents([(0, 10)]).remove(3, 6).add(3, 6) == Extents([(0, 10)])
    assert hash(Extents([(0, 4), (4, 10)])) == hash(Extents([(0, 10)]))


@pytest.mark.parametrize("ranges", [[(0, 10), (5, 15)], [(3, 3)], [(4, 2)], [(-1, 2)]])
def test_overlapping_or_empty_ranges_are_not_extents(ranges: list[tuple[int, int]]) -> None:
    with pytest.raises(ValueError):
        Extents(ranges)


def test_contains_needs_every_offset_in_one_range() -> None:
    ext = Extents([(0, 10), (20, 30)])
    assert ext.contains(0, 10) and ext.contains(20, 21) and ext.contains(29, 30)
    assert not ext.contains(5, 25)  # spans the gap
    assert not ext.contains(9, 11) and not ext.contains(30, 31) and not ext.contains(10, 20)
    assert not ext.contains(5, 5) and not ext.contains(6, 5)  # nothing to hold


def test_overlaps_finds_any_shared_offset_and_not_mere_touching() -> None:
    ext = Extents([(10, 20), (30, 40)])
    assert ext.overlaps(19, 21) and ext.overlaps(0, 11) and ext.overlaps(25, 31)
    assert ext.overlaps(0, 100) and ext.overlaps(15, 16)
    assert not ext.overlaps(20, 30) and not ext.overlaps(0, 10) and not ext.overlaps(40, 50)
    assert not ext.overlaps(15, 15)


def test_add_refuses_an_overlap_and_remove_refuses_what_is_not_held() -> None:
    ext = Extents([(10, 20)])
    with pytest.raises(ValueError, match="overlaps"):
        ext.add(19, 25)
    with pytest.raises(ValueError, match="not inside"):
        ext.remove(15, 25)
    with pytest.raises(ValueError):
        ext.add(5, 5)
    assert ext == Extents([(10, 20)])  # unchanged: extents are values


def test_remove_splits_a_range_and_add_joins_neighbours() -> None:
    ext = Extents([(0, 100)]).remove(40, 60)
    assert ext.ranges == ((0, 40), (60, 100))
    assert ext.total == 80
    assert ext.add(40, 60).ranges == ((0, 100),)
    assert ext.remove(0, 40).remove(60, 100) == Extents()
    assert not Extents() and len(ext) == 2


def test_first_fit_is_the_lowest_run_long_enough() -> None:
    ext = Extents([(0, 4), (10, 30), (50, 100)])
    assert ext.first_fit(4) == 0
    assert ext.first_fit(5) == 10
    assert ext.first_fit(21) == 50
    assert ext.first_fit(51) is None
    assert ext.largest() == 50 and Extents().largest() == 0
    with pytest.raises(ValueError):
        ext.first_fit(0)


OPS = st.lists(
    st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 60), st.integers(1, 20)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(start=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 10)), max_size=6), ops=OPS)
def test_extents_behave_like_a_set_of_offsets(
    start: list[tuple[int, int]], ops: list[tuple[str, int, int]]
) -> None:
    model: set[int] = set()
    ext = Extents()
    for a, size in start:
        if not model & set(range(a, a + size)):
            ext = ext.add(a, a + size)
            model |= set(range(a, a + size))
    for op, a, size in ops:
        span = set(range(a, a + size))
        assert ext.contains(a, a + size) == (span <= model)
        assert ext.overlaps(a, a + size) == bool(span & model)
        fit = ext.first_fit(size)
        runs = [s for s in range(0, 100) if set(range(s, s + size)) <= model]
        assert fit == (runs[0] if runs else None)
        if op == "add" and not span & model:
            ext, model = ext.add(a, a + size), model | span
        elif op == "remove" and span <= model:
            ext, model = ext.remove(a, a + size), model - span
        assert offsets(ext) == model and ext.total == len(model)
        assert all(b < c for (_, b), (c, _) in zip(ext.ranges, ext.ranges[1:], strict=False))
