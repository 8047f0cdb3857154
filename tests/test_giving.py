"""The automatic giving policy (state/giving.py), on figures alone: who is running low,
who gives, how much, and what a donor always keeps."""

from __future__ import annotations

from ghostline.state.giving import (
    FLOOR_MESSAGES,
    RESERVE_FACTOR,
    likely_needs,
    plan_gift,
)
from ghostline.state.usage import MemberUsage

E = 100_000


def member(index: int, *, used: int, left: int, keys_left: int = 10_000, size: float = 96.0):
    return MemberUsage(
        index=index, name=f"m{index}", is_self=index == 0, bytes_used=used, bytes_left=left,
        keys_used=0, keys_left=keys_left, messages=0, average_size=size, messages_left=0,
        slice_len=E, auth_keys=20_000, pad_total=used + left,
    )  # fmt: skip


def plan(members: list[MemberUsage], me: int, **kwargs: object):
    options = {"giftable": 10**9, "outstanding": frozenset(), "step": 32} | kwargs
    return plan_gift(members, me=me, **options)  # type: ignore[arg-type]


def test_nobody_gives_while_nobody_is_running_low() -> None:
    even = [member(0, used=10_000, left=90_000), member(1, used=10_000, left=90_000)]
    assert plan(even, 0) is None and plan(even, 1) is None


def test_the_talker_running_low_gets_pad_from_the_quiet_member_who_keeps_a_reserve() -> None:
    talker, quiet = member(0, used=80_000, left=20_000), member(1, used=20_000, left=80_000)
    gift = plan([talker, quiet], 1)
    assert gift is not None and gift.to == 0
    assert gift.size % 32 == 0 and gift.size > 0
    needs = likely_needs([talker, quiet])
    kept = quiet.bytes_left - gift.size
    assert kept >= RESERVE_FACTOR * needs[1] + FLOOR_MESSAGES * quiet.average_size
    assert plan([talker, quiet], 0) is None  # the talker gives nothing to the quiet one


def test_only_the_member_with_the_largest_surplus_gives_and_ties_go_to_the_lowest_index() -> None:
    talker = member(0, used=90_000, left=10_000)
    rich, poorer = member(1, used=5_000, left=95_000), member(2, used=20_000, left=80_000)
    assert plan([talker, rich, poorer], 2) is None
    assert plan([talker, rich, poorer], 1) is not None
    twin = member(2, used=5_000, left=95_000)
    assert plan([talker, rich, twin], 1) is not None and plan([talker, rich, twin], 2) is None


def test_no_second_grant_while_one_is_outstanding_and_none_for_a_member_without_masks() -> None:
    talker, quiet = member(0, used=80_000, left=20_000), member(1, used=20_000, left=80_000)
    assert plan([talker, quiet], 1, outstanding=frozenset({0})) is None
    no_masks = member(0, used=80_000, left=20_000, keys_left=0)
    assert plan([no_masks, quiet], 1) is None


def test_a_gift_is_no_larger_than_what_can_be_given_in_one_piece_and_not_tiny() -> None:
    talker, quiet = member(0, used=80_000, left=20_000), member(1, used=20_000, left=80_000)
    gift = plan([talker, quiet], 1, giftable=5_000)
    assert gift is not None and gift.size == 4_992  # rounded down to the step
    assert plan([talker, quiet], 1, giftable=100) is None  # under four of the talker's texts
