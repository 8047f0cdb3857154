"""Grants (docs/PROTOCOL.md section 15): moving group-pad ranges between members. Pure.

A grant says "member `sender` gives the absolute range [start, end) of the group pad to
member `to`". Its 18 bytes, `to (2) || start (8) || end (8)`, are both the body of a
grant payload (kind 0x10, payload.py) and one record of the grant journal, the last
4096 bytes of a format-2 kit. This module holds that record, the journal's encoding,
the checks a receiver makes before it accepts a grant, and how extents follow from the
initial slices and a sequence of grants. The durable side (committing, appending to the
journal after a commit) belongs to the state layer.

The journal: record i occupies bytes [18i, 18i + 18); 227 records fit (the last 10
bytes are never used). A record is appended in the first all-zero slot, and no valid
record is all zeros (start < end), so records fill the journal from its start, in the
order they were made.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from ..errors import InvalidGrant
from .extents import Extents
from .kitformat import JOURNAL_LEN

GRANT_BODY = struct.Struct(">HQQ")
RECORD_LEN = GRANT_BODY.size
JOURNAL_SLOTS = JOURNAL_LEN // RECORD_LEN
_ZERO_RECORD = bytes(RECORD_LEN)
_U16_MAX = (1 << 16) - 1
_U64_MAX = (1 << 64) - 1
assert RECORD_LEN == 18 and JOURNAL_SLOTS == 227


class GrantRange(NamedTuple):
    """`[start, end)` of the group pad, given to member `to`."""

    to: int
    start: int
    end: int

    def encode(self) -> bytes:
        """The 18 bytes of a grant body or journal record. Raises ValueError when a
        field does not fit its width."""
        if not 0 <= self.to <= _U16_MAX:
            raise ValueError(f"member {self.to} does not fit in 2 bytes")
        if not (0 <= self.start <= _U64_MAX and 0 <= self.end <= _U64_MAX):
            raise ValueError(f"[{self.start}, {self.end}) does not fit in 8-byte offsets")
        return GRANT_BODY.pack(self.to, self.start, self.end)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> GrantRange:
        """Read 18 bytes exactly (ValueError otherwise). Checks widths only: whether the
        grant makes sense is `check_grant`'s job."""
        if len(body) != RECORD_LEN:
            raise ValueError(f"a grant is {RECORD_LEN} bytes, not {len(body)}")
        to, start, end = GRANT_BODY.unpack(body)
        return cls(to, start, end)


# --- the journal -----------------------------------------------------------------------


class JournalError(ValueError):
    """A journal that no kit writer could have produced (the kit is damaged)."""


def decode_journal(raw: bytes | memoryview, *, n: int, pad_len: int) -> list[GrantRange]:
    """The records of a journal, oldest first. Raises JournalError for a record that is
    no grant (`to >= n`, `start >= end`, `end > pad_len`) or one after an empty slot."""
    if len(raw) != JOURNAL_LEN:
        raise JournalError(f"a grant journal is {JOURNAL_LEN} bytes, not {len(raw)}")
    records: list[GrantRange] = []
    ended = False
    for slot in range(JOURNAL_SLOTS):
        chunk = bytes(raw[slot * RECORD_LEN : (slot + 1) * RECORD_LEN])
        if chunk == _ZERO_RECORD:
            ended = True
            continue
        if ended:
            raise JournalError(f"journal record {slot} follows an empty slot")
        record = GrantRange.decode(chunk)
        if record.to >= n or not record.start < record.end <= pad_len:
            raise JournalError(
                f"journal record {slot} gives [{record.start}, {record.end}) to member "
                f"{record.to}, which no group of {n} with a {pad_len}-byte pad can hold"
            )
        records.append(record)
    return records


def free_slot(raw: bytes | memoryview) -> int | None:
    """The byte offset in the journal where the next record goes, or None when full."""
    for slot in range(JOURNAL_SLOTS):
        at = slot * RECORD_LEN
        if bytes(raw[at : at + RECORD_LEN]) == _ZERO_RECORD:
            return at
    return None


# --- extents ---------------------------------------------------------------------------


def initial_extents(n: int, slice_len: int) -> tuple[Extents, ...]:
    """Every member's extents in a new kit: member s holds [s*E, (s+1)*E)."""
    return tuple(Extents([(s * slice_len, (s + 1) * slice_len)]) for s in range(n))


def move_range(extents: Sequence[Extents], giver: int, grant: GrantRange) -> tuple[Extents, ...]:
    """`extents` (one per member) after `giver` gives `grant`'s range to `grant.to`.
    Raises ValueError when the giver does not hold the whole range."""
    moved = list(extents)
    moved[giver] = moved[giver].remove(grant.start, grant.end)
    moved[grant.to] = moved[grant.to].add(grant.start, grant.end)
    return tuple(moved)


def replay_journal(n: int, slice_len: int, records: Iterable[GrantRange]) -> tuple[Extents, ...]:
    """Every member's extents after the journal's grants, applied in order to the
    initial slices (what `pad recover` rebuilds). Each record's giver is whoever holds
    the range at that point: extents partition the group pad, so there is at most one.
    Raises JournalError when no single member holds a record's range."""
    extents = initial_extents(n, slice_len)
    for i, record in enumerate(records):
        holders = [s for s in range(n) if extents[s].contains(record.start, record.end)]
        if not holders or holders[0] == record.to:
            raise JournalError(
                f"journal record {i} gives [{record.start}, {record.end}) to member "
                f"{record.to}, but no other member holds that whole range"
            )
        extents = move_range(extents, holders[0], record)
    return extents


# --- accepting a grant -----------------------------------------------------------------


class GrantRule:
    """Stable names of the checks a receiver makes on a grant, in checking order."""

    TO_SENDER = "grant_to_sender"
    TO_UNKNOWN_MEMBER = "grant_to_unknown_member"
    EMPTY_RANGE = "grant_empty_range"
    OUTSIDE_EXTENTS = "grant_outside_extents"
    OVERLAPS_OWN_MESSAGE = "grant_overlaps_own_message"
    OVERLAPS_ACCEPTED = "grant_overlaps_accepted"

    ALL = (
        TO_SENDER,
        TO_UNKNOWN_MEMBER,
        EMPTY_RANGE,
        OUTSIDE_EXTENTS,
        OVERLAPS_OWN_MESSAGE,
        OVERLAPS_ACCEPTED,
    )


class GrantView(Protocol):
    """What a receiver knows when it checks a grant (a read-only view of its state)."""

    def holds(self, sender: int, start: int, end: int) -> bool:
        """Whether [start, end) is inside `sender`'s extents as this receiver knows them."""
        ...

    def overlaps_accepted(self, start: int, end: int) -> bool:
        """Whether [start, end) overlaps a range accepted from any sender."""
        ...


def check_grant(
    grant: GrantRange,
    *,
    sender: int,
    n: int,
    message_range: tuple[int, int],
    state: GrantView,
) -> None:
    """Raise InvalidGrant unless a receiver may accept `grant` from `sender`, whose
    grant message itself used `message_range` = [offset, offset + L) of the pad.

    The message has already opened (and so its range is inside the sender's extents
    and overlaps nothing accepted); it is not yet recorded, hence its own check.
    Changes nothing.
    """
    to, start, end = grant
    if to == sender:
        raise InvalidGrant(GrantRule.TO_SENDER, f"member {sender} grants pad to itself")
    if to >= n:
        raise InvalidGrant(GrantRule.TO_UNKNOWN_MEMBER, f"grant to member {to}, not in the group")
    if start >= end:
        raise InvalidGrant(GrantRule.EMPTY_RANGE, f"grant of [{start}, {end}), an empty range")
    if not state.holds(sender, start, end):
        raise InvalidGrant(
            GrantRule.OUTSIDE_EXTENTS,
            f"grant of [{start}, {end}), which is not all member {sender}'s to give",
        )
    message_start, message_end = message_range
    if start < message_end and message_start < end:
        raise InvalidGrant(
            GrantRule.OVERLAPS_OWN_MESSAGE,
            f"grant of [{start}, {end}) includes pad bytes its own message used",
        )
    if state.overlaps_accepted(start, end):
        raise InvalidGrant(
            GrantRule.OVERLAPS_ACCEPTED,
            f"grant of [{start}, {end}) includes pad bytes of an accepted message",
        )
