"""The relay cursor, the seq guard and the gap watch: pure logic, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghostline.errors import ProtocolError
from ghostline.protocol.relaycursor import (
    MAX_SEEN,
    SEQ_LIMIT,
    Anchor,
    AnchorCheck,
    AnchorVerdict,
    GapWatch,
    Lost,
    Refetch,
    RelayCursor,
    SeqGuard,
    frame_digest,
)

A, B = b"A" * 16, b"B" * 16


def settled(cursor: RelayCursor, *seqs: int) -> RelayCursor:
    out, lost = cursor.settle(seqs)
    assert lost == []
    return out


def test_the_cursor_moves_only_over_a_contiguous_run() -> None:
    cursor = settled(RelayCursor(A), 3, 2)
    assert (cursor.upto, cursor.seen) == (0, {2, 3})
    assert cursor.gaps() == [(1, 1)]
    cursor = settled(cursor, 1)
    assert (cursor.upto, cursor.seen, cursor.gaps()) == (3, frozenset(), [])
    cursor = settled(cursor, 7, 5, 2)  # 2 again changes nothing
    assert (cursor.upto, cursor.gaps()) == (3, [(4, 4), (6, 6)])
    assert cursor.is_settled(2) and cursor.is_settled(5) and not cursor.is_settled(6)


@given(st.permutations(range(1, 40)), st.sets(st.integers(1, 39), max_size=5))
def test_whatever_the_order_the_cursor_stops_before_the_first_seq_not_settled(
    order: list[int], missing: set[int]
) -> None:
    cursor = RelayCursor(A)
    for seq in order:
        if seq not in missing:
            cursor = settled(cursor, seq)
            first_missing = min(missing | {40})
            assert cursor.upto < first_missing
    assert cursor.upto == min(missing | {40}) - 1
    assert {s for a, b in cursor.gaps() for s in range(a, b + 1)} == {
        s for s in missing if s < max(set(range(1, 40)) - missing, default=0)
    }


def test_giving_up_a_hole_steps_over_it_and_keeps_what_lies_above() -> None:
    cursor = settled(RelayCursor(A), 2, 3, 5, 9)
    cursor = cursor.give_up_to(1)
    assert (cursor.upto, cursor.seen) == (3, {5, 9})
    cursor = cursor.give_up_to(4)
    assert (cursor.upto, cursor.seen) == (5, {9})
    assert cursor.give_up_to(2) == cursor


def test_past_max_seen_the_lowest_hole_is_given_up_and_reported() -> None:
    cursor = settled(RelayCursor(A), *range(3, 3 + MAX_SEEN))
    cursor, lost = cursor.settle([MAX_SEEN + 10])
    assert lost == [(1, 2)]
    assert cursor.upto == MAX_SEEN + 2 and cursor.seen == {MAX_SEEN + 10}


def test_seqs_out_of_range_are_refused() -> None:
    for bad in (0, -1, SEQ_LIMIT):
        with pytest.raises(ValueError):
            RelayCursor(A).settle([bad])


def test_another_store_starts_from_zero_and_a_cursor_from_before_store_ids_is_adopted() -> None:
    cursor = settled(RelayCursor(A, 5), 7)
    assert cursor.for_store(A) is cursor
    assert cursor.for_store(B) == RelayCursor(B)
    legacy = RelayCursor(None, 5)
    assert legacy.for_store(B) == RelayCursor(B, 5)


def test_the_database_form_round_trips_and_refuses_damage() -> None:
    cursor = settled(RelayCursor(A, 5), 9, SEQ_LIMIT - 1)
    assert RelayCursor.from_row(A, 5, cursor.seen_blob()) == cursor
    for upto, blob in [
        (-1, b""),
        (SEQ_LIMIT, b""),
        (5, b"\x00" * 7),
        (5, (5).to_bytes(8, "big")),  # at or below upto + 1
        (5, b"\xff" * 8),  # past SEQ_LIMIT
        (5, b"\x00" * 8 * (MAX_SEEN + 1)),
    ]:
        with pytest.raises(ValueError):
            RelayCursor.from_row(A, upto, blob)


def test_the_guard_allows_one_new_seq_per_frame_above_the_base() -> None:
    guard = SeqGuard(10)
    for seq in (3, 10, 11, 1):  # at or below the base: not counted
        guard.check(seq)
    guard.check(12)
    with pytest.raises(ProtocolError, match="beyond any it can have assigned"):
        guard.check(14)
    for bad in (0, SEQ_LIMIT, 2**64 - 1):
        with pytest.raises(ProtocolError, match="which no room has"):
            SeqGuard(0).check(bad)


def test_a_hole_among_live_messages_is_refetched_after_the_wait() -> None:
    at_welcome = RelayCursor(A, 4)
    watch = GapWatch(30.0, head=4, at_welcome=at_welcome)
    cursor = settled(at_welcome, 6)
    assert watch.check(cursor, now=100.0) is None
    assert watch.check(cursor, now=129.9) is None
    assert watch.check(cursor, now=130.0) == Refetch(5, 5)
    assert watch.check(settled(cursor, 5), now=131.0) is None


def test_a_hole_the_relay_was_asked_for_is_lost_after_the_wait() -> None:
    # Replayed below the head, in order: a hole there is not in the relay's store.
    watch = GapWatch(30.0, head=9, at_welcome=RelayCursor(A, 4))
    cursor = settled(RelayCursor(A, 4), 8, 9)
    assert watch.check(cursor, now=0.0) is None
    assert watch.check(cursor, now=30.0) == Lost(5, 7)
    # Carried over from an earlier connection (it was asked for again): lost too.
    carried = settled(RelayCursor(A, 4), 20)
    watch = GapWatch(30.0, head=4, at_welcome=carried)
    assert watch.check(carried, now=0.0) is None
    assert watch.check(carried, now=30.0) == Lost(5, 19)


def test_the_wait_restarts_for_a_new_lowest_hole() -> None:
    watch = GapWatch(10.0, head=0, at_welcome=RelayCursor(A))
    cursor = settled(RelayCursor(A), 2, 4)
    assert watch.check(cursor, now=0.0) is None
    cursor = settled(cursor, 1)  # hole 1 filled; hole 3 was open since 0
    assert watch.check(cursor, now=10.0) == Refetch(3, 3)


def test_a_head_below_the_cursor_means_the_store_went_back() -> None:
    cursor = settled(RelayCursor(A, 5), 9)
    assert cursor.went_back(4)
    assert not cursor.went_back(5) and not cursor.went_back(7)


def test_the_anchor_check_compares_the_frame_at_its_seq_and_only_that() -> None:
    anchor = Anchor(7, frame_digest(b"the message at seq 7"))
    assert anchor.resume_after == 6
    check = AnchorCheck(anchor)
    assert check.check(5, frame_digest(b"older")) is None  # not yet at the anchor
    assert check.check(7, frame_digest(b"the message at seq 7")) is AnchorVerdict.SAME
    assert check.check(7, frame_digest(b"another")) is AnchorVerdict.SAME  # decided once
    other = AnchorCheck(anchor)
    assert other.check(7, frame_digest(b"a new message at 7")) is AnchorVerdict.DIVERGED
    gone = AnchorCheck(anchor)  # retention removed it: the first frame is a later one
    assert gone.check(8, frame_digest(b"x")) is AnchorVerdict.UNKNOWN
    for seq, digest in ((0, anchor.digest), (SEQ_LIMIT, anchor.digest), (1, b"short")):
        with pytest.raises(ValueError):
            Anchor(seq, digest)
