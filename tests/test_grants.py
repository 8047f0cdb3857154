"""Grants (docs/PROTOCOL.md section 15): the 0x10 payload codec, the journal codec, the
receiver's checks, and extents rebuilt from a journal."""

from __future__ import annotations

import struct

import pytest

from ghostline.errors import InvalidGrant, PayloadError
from ghostline.protocol.extents import Extents
from ghostline.protocol.grants import (
    JOURNAL_SLOTS,
    GrantRange,
    GrantRule,
    JournalError,
    check_grant,
    decode_journal,
    free_slot,
    initial_extents,
    move_range,
    replay_journal,
)
from ghostline.protocol.payload import GrantPayload, Kind, decode, decode_grant
from helpers import MemoryReceiverView

U64 = (1 << 64) - 1

# --- the payload ------------------------------------------------------------------------


def test_a_grant_payload_is_kind_sent_at_to_start_end_byte_for_byte() -> None:
    grant = GrantPayload(to=2, start=0x0102, end=U64, sent_at=1735689600)
    raw = grant.encode()
    body = struct.pack(">HQQ", 2, 0x0102, U64)
    assert raw == bytes([0x10]) + struct.pack(">I", 1735689600) + body
    assert len(raw) == 5 + 18 and Kind.GRANT == 0x10
    assert decode_grant(raw) == grant
    assert grant.grant == GrantRange(2, 0x0102, U64)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        bytes([0x10, 0, 0, 0, 0]),  # no body
        bytes([0x10, 0, 0, 0, 0]) + bytes(17),
        bytes([0x10, 0, 0, 0, 0]) + bytes(19),
        bytes([0x01, 0, 0, 0, 0]) + bytes(18),  # a text
    ],
)
def test_a_grant_payload_of_any_other_shape_is_a_payload_error(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_grant(raw)


@pytest.mark.parametrize(
    ("to", "start", "end", "sent_at"),
    [(1 << 16, 0, 1, 0), (-1, 0, 1, 0), (0, -1, 1, 0), (0, 0, 1 << 64, 0), (0, 0, 1, 1 << 32)],
)
def test_a_grant_whose_fields_do_not_fit_is_not_encoded(
    to: int, start: int, end: int, sent_at: int
) -> None:
    with pytest.raises(ValueError):
        GrantPayload(to, start, end, sent_at)


def test_the_generic_decoder_reads_grants_and_refuses_a_grant_of_the_wrong_length() -> None:
    grant = GrantPayload(1, 0, 10, 7)
    assert decode(grant.encode()) == grant
    with pytest.raises(PayloadError, match="grant body is 19 bytes, not 18"):
        decode(grant.encode() + b"\0")


# --- the journal ------------------------------------------------------------------------


def journal_of(*records: GrantRange) -> bytes:
    raw = b"".join(r.encode() for r in records)
    return raw + bytes(4096 - len(raw))


def test_a_journal_reads_its_records_in_order_and_knows_its_next_slot() -> None:
    records = [GrantRange(1, 0, 10), GrantRange(0, 500, 600), GrantRange(2, 10, 11)]
    raw = journal_of(*records)
    assert decode_journal(raw, n=3, pad_len=768) == records
    assert free_slot(raw) == 54
    assert free_slot(bytes(4096)) == 0
    full = journal_of(*[GrantRange(1, i, i + 1) for i in range(JOURNAL_SLOTS)])
    assert free_slot(full) is None
    assert len(decode_journal(full, n=3, pad_len=768)) == 227


@pytest.mark.parametrize(
    "raw",
    [
        journal_of(GrantRange(3, 0, 1)),  # no member 3 in a group of 3
        journal_of(GrantRange(1, 5, 5)),  # empty range
        journal_of(GrantRange(1, 700, 769)),  # past the pad
        bytes(18) + journal_of(GrantRange(1, 0, 1))[:-18],  # after an empty slot
        bytes(4095),
    ],
)
def test_a_journal_no_writer_could_produce_is_refused(raw: bytes) -> None:
    with pytest.raises(JournalError):
        decode_journal(raw, n=3, pad_len=768)


def test_replaying_a_journal_moves_each_range_from_whoever_holds_it() -> None:
    records = [GrantRange(1, 0, 50), GrantRange(2, 20, 30), GrantRange(0, 300, 320)]
    extents = replay_journal(3, 256, records)
    assert extents == (
        Extents([(50, 256), (300, 320)]),
        Extents([(0, 20), (30, 50), (256, 300), (320, 512)]),
        Extents([(20, 30), (512, 768)]),
    )
    assert sum(e.total for e in extents) == 768  # still a partition of the pad
    assert replay_journal(3, 256, []) == initial_extents(3, 256)


@pytest.mark.parametrize(
    "records",
    [
        [GrantRange(1, 250, 260)],  # spans alice's and bob's ranges
        [GrantRange(0, 0, 10)],  # alice "gives" alice her own range
        [GrantRange(1, 0, 10), GrantRange(2, 5, 15)],  # nobody holds [5, 15) any more
    ],
)
def test_a_journal_whose_grants_no_one_could_make_is_refused(
    records: list[GrantRange],
) -> None:
    with pytest.raises(JournalError, match="no other member holds"):
        replay_journal(3, 256, records)


def test_move_range_needs_the_giver_to_hold_all_of_it() -> None:
    extents = initial_extents(2, 100)
    moved = move_range(extents, 0, GrantRange(1, 60, 100))
    assert moved == (Extents([(0, 60)]), Extents([(60, 200)]))
    with pytest.raises(ValueError):
        move_range(moved, 0, GrantRange(1, 50, 70))
    assert extents == initial_extents(2, 100)  # values: the input is untouched


# --- checking a received grant ----------------------------------------------------------


def rule(grant: GrantRange, state: MemoryReceiverView, sender: int = 0) -> str:
    with pytest.raises(InvalidGrant) as caught:
        check_grant(grant, sender=sender, n=3, message_range=(0, 24), state=state)
    assert isinstance(caught.value, PayloadError)  # the message itself stays accepted
    return caught.value.rule


def test_a_grant_of_unused_pad_inside_the_senders_extents_is_accepted() -> None:
    state = MemoryReceiverView(3, 256, accepted=[(1, 0, 256, 280), (0, 3, 24, 48)])
    # Accepted (no InvalidGrant) right up to the edges: a byte more either way is not.
    check_grant(GrantRange(1, 48, 256), sender=0, n=3, message_range=(0, 24), state=state)
    assert rule(GrantRange(1, 47, 256), state) == GrantRule.OVERLAPS_ACCEPTED
    assert rule(GrantRange(1, 48, 257), state) == GrantRule.OUTSIDE_EXTENTS
    # Granted pad is the receiver's to give on.
    state.extents = move_range(state.extents, 0, GrantRange(1, 100, 200))
    check_grant(GrantRange(2, 120, 140), sender=1, n=3, message_range=(300, 324), state=state)
    assert rule(GrantRange(2, 99, 140), state, sender=1) == GrantRule.OUTSIDE_EXTENTS


def test_every_grant_rule_refuses_what_it_names() -> None:
    state = MemoryReceiverView(3, 256, accepted=[(2, 0, 100, 124)])
    assert rule(GrantRange(0, 50, 60), state) == GrantRule.TO_SENDER
    assert rule(GrantRange(3, 50, 60), state) == GrantRule.TO_UNKNOWN_MEMBER
    assert rule(GrantRange(1, 60, 60), state) == GrantRule.EMPTY_RANGE
    assert rule(GrantRange(1, 61, 60), state) == GrantRule.EMPTY_RANGE
    assert rule(GrantRange(1, 250, 260), state) == GrantRule.OUTSIDE_EXTENTS
    assert rule(GrantRange(1, 300, 310), state) == GrantRule.OUTSIDE_EXTENTS
    assert rule(GrantRange(1, 0, U64), state) == GrantRule.OUTSIDE_EXTENTS
    assert rule(GrantRange(1, 23, 40), state) == GrantRule.OVERLAPS_OWN_MESSAGE
    assert rule(GrantRange(1, 123, 140), state) == GrantRule.OVERLAPS_ACCEPTED
    assert set(GrantRule.ALL) == {
        GrantRule.TO_SENDER, GrantRule.TO_UNKNOWN_MEMBER, GrantRule.EMPTY_RANGE,
        GrantRule.OUTSIDE_EXTENTS, GrantRule.OVERLAPS_OWN_MESSAGE,
        GrantRule.OVERLAPS_ACCEPTED,
    }  # fmt: skip


def test_a_range_already_granted_away_cannot_be_granted_again() -> None:
    state = MemoryReceiverView(3, 256, grants=[(0, GrantRange(1, 100, 200))])
    assert rule(GrantRange(2, 150, 160), state) == GrantRule.OUTSIDE_EXTENTS
    check_grant(GrantRange(2, 150, 160), sender=1, n=3, message_range=(300, 324), state=state)
