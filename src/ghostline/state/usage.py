"""How much pad is left, and when to warn: the one home of these figures.

Every reader of "how much is left" goes through here: the client's pad events, the
chat and web apps' gauges and warnings, `send`/`listen`'s warnings and `pad info`.

- `PadLeft`: one member's pad and keys left, with the warning `level` (thresholds
  LOW_FRACTION and CRITICAL_FRACTION; "exhausted" below the smallest message). Pure.
  A member's pad is its slice (format 1) or its current extents (format 2: its
  initial range, minus what it gave away, plus what it was given), so a gauge shows
  what the member holds now.
- `own_pad_left(header, next_counter, next_offset)`: the owner's, from where it sends
  next (exact: the state database's position, or the end of its last sealed message;
  format 2: from its unsealed bytes and extents).
- `after_message`: a member's figures once one more of its messages is seen (format 1;
  format 2's figures are read again, as grants move them both ways).
- `compute_usage` -> `KitUsage`: every member's figures for `pad info` and the apps,
  from the state database or, without one, from the kit's erasures alone.

Each UI words the warnings itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..pad.kit import Kit
from ..protocol.extents import Extents
from ..protocol.kitformat import FORMAT_1, KEY_LEN, MASK_LEN, KitHeader
from ..protocol.payload import PREFIX_LEN, Kind
from .erasure import (
    count_erased_keys,
    erased_bytes_within,
    erased_extent,
    erased_inbound_counters,
    highest_erased_outbound,
    zero_prefix,
)
from .history import History
from .store import SenderTotals, Store

# Warn when no more than these shares of the slice (bytes or keys) are left.
LOW_FRACTION = 0.10
CRITICAL_FRACTION = 0.01

# The smallest message: a text payload's prefix (kind, sent_at) and one byte of text.
# A slice with fewer bytes left can send nothing at all.
MIN_MESSAGE_BYTES = PREFIX_LEN + 1

DEFAULT_AVERAGE_SIZE = 64
RECENT_TEXTS = 100  # text messages the "messages left" estimate averages over

PadLevel = Literal["ok", "low", "critical", "exhausted"]
# Worse levels sort later: a warning is due when the level moves right.
LEVELS: tuple[PadLevel, ...] = ("ok", "low", "critical", "exhausted")


@dataclass(frozen=True, slots=True)
class PadLeft:
    """How much of one member's slice of the pad is left."""

    bytes_left: int
    bytes_total: int
    msgs_left: int  # one-time keys left: one per message
    msgs_total: int

    @property
    def fraction_left(self) -> float:
        """The lower of the byte and message fractions: whichever runs out first."""
        by_bytes = self.bytes_left / self.bytes_total if self.bytes_total else 0.0
        by_msgs = self.msgs_left / self.msgs_total if self.msgs_total else 0.0
        return max(0.0, min(by_bytes, by_msgs))

    @property
    def level(self) -> PadLevel:
        if self.bytes_left < MIN_MESSAGE_BYTES or self.msgs_left <= 0:
            return "exhausted"
        fraction = self.fraction_left
        if fraction <= CRITICAL_FRACTION:
            return "critical"
        if fraction <= LOW_FRACTION:
            return "low"
        return "ok"

    def after(self, used_bytes: int, used_msgs: int) -> PadLeft:
        return PadLeft(
            max(0, self.bytes_left - used_bytes),
            self.bytes_total,
            max(0, self.msgs_left - used_msgs),
            self.msgs_total,
        )


def worse(a: PadLevel, b: PadLevel) -> bool:
    """Whether level `a` is worse than `b`."""
    return LEVELS.index(a) > LEVELS.index(b)


def own_pad_left(
    header: KitHeader,
    next_counter: int,
    next_offset: int,
    *,
    unsealed: Extents | None = None,
    extents: Extents | None = None,
) -> PadLeft:
    """The owner's pad and keys left when it would send message `next_counter` from
    offset `next_offset` of its slice next (format 1), or from its `unsealed` bytes out
    of its current `extents` (format 2)."""
    keys_left = max(0, header.auth_keys - next_counter)
    if unsealed is not None and extents is not None:
        return PadLeft(unsealed.total, extents.total, keys_left, header.auth_keys)
    return PadLeft(
        max(0, header.slice_len - next_offset), header.slice_len, keys_left, header.auth_keys
    )


def after_message(pad: PadLeft, *, counter: int, end: int) -> PadLeft:
    """`pad` once a message with `counter` whose range ends at `end` is used (figures
    only ever go down: messages may be seen out of order)."""
    keys_left = min(pad.msgs_left, max(0, pad.msgs_total - (counter + 1)))
    bytes_left = min(pad.bytes_left, max(0, pad.bytes_total - end))
    return PadLeft(bytes_left, pad.bytes_total, keys_left, pad.msgs_total)


@dataclass(frozen=True)
class MemberUsage:
    """One member's pad and keys as this kit's owner sees them.

    For the owner the figures are exact. For another member they count what the owner
    has accepted from them (highest counter + 1; the end of the highest range, or in
    format 2 the bytes of every range): a lower bound on what they really used.
    `pad_total` is the member's slice (format 1) or current extents (format 2).
    """

    index: int
    name: str
    is_self: bool
    bytes_used: int
    bytes_left: int
    keys_used: int
    keys_left: int
    messages: int  # sent (owner) or accepted (others)
    average_size: float  # bytes per message; DEFAULT_AVERAGE_SIZE when none yet
    messages_left: int  # min(keys left, bytes left // text size)
    slice_len: int
    auth_keys: int
    # Bytes per text message, over the last RECENT_TEXTS in the history (file chunks,
    # 64 KiB each, would make "messages left" mean "file chunks left");
    # DEFAULT_AVERAGE_SIZE when there are none.
    text_size: float = float(DEFAULT_AVERAGE_SIZE)
    pad_total: int = -1  # -1: the slice (format 1)
    extents: Extents | None = None  # format 2: as the owner knows them
    failed: int = 0  # tag verifications of their messages that failed here

    @property
    def pad_size(self) -> int:
        """What the member holds now: its slice, or its current extents (format 2)."""
        return self.slice_len if self.pad_total < 0 else self.pad_total

    @property
    def pad(self) -> PadLeft:
        return PadLeft(self.bytes_left, self.pad_size, self.keys_left, self.auth_keys)

    @property
    def fraction_left(self) -> float:
        """The smaller of the shares of keys and of slice bytes still unused (0..1)."""
        return self.pad.fraction_left


@dataclass(frozen=True)
class KitUsage:
    slice_len: int
    auth_keys: int
    members: tuple[MemberUsage, ...]
    keys_total: int  # 2 * (n-1) * K one-time keys (masks) in this kit
    keys_erased: int  # exact: keys (masks) reading as all zeros
    pad_bytes_total: int  # n * E
    pad_bytes_erased: int  # from the state's records (own, accepted, skipped)
    key_len: int = KEY_LEN  # bytes per key (format 1) or mask (format 2)

    @property
    def erased_fraction(self) -> float:
        """Share of the kit's secret bytes (pad and keys) that are erased."""
        total = self.pad_bytes_total + self.keys_total * self.key_len
        erased = self.pad_bytes_erased + self.keys_erased * self.key_len
        return erased / total if total else 0.0

    @property
    def me(self) -> MemberUsage:
        return next(m for m in self.members if m.is_self)

    def pads(self) -> dict[int, PadLeft]:
        """Every member's slice, by member index."""
        return {m.index: m.pad for m in self.members}


def compute_usage(
    kit: Kit, state: tuple[Store, History] | None, *, scan_kit: bool = True
) -> KitUsage:
    """Usage figures from the state database (its safety tables and history), or from
    the kit alone when `state` is None (then the owner's figures are what the kit's
    erasures show). `scan_kit=False` counts erased keys from the state's records."""
    h = kit.header
    k, e = h.auth_keys, h.slice_len
    two = h.format != FORMAT_1
    store, history = state if state is not None else (None, None)
    accepted: dict[int, SenderTotals] = store.accepted_totals() if store else {}
    failed = store.failed_counts() if store else {}
    extents: tuple[Extents, ...] | None = None
    if two:
        extents = store.extents(h.n) if store else kit.journal_extents()
    members = []
    for i, m in enumerate(h.members):
        held = extents[i] if extents is not None else None
        if i == h.self_index:
            if store is not None:
                keys_used, bytes_used = store.next_position()
                messages, sent_bytes = store.sent_totals()
                if held is not None:
                    bytes_used = held.total - store.unsealed().total
            else:
                keys_used = highest_erased_outbound(kit) + 1
                bytes_used = (
                    erased_extent(kit, i) if held is None else erased_bytes_within(kit, held)
                )
                messages, sent_bytes = keys_used, bytes_used
            sized = messages
        elif store is not None:
            t = accepted.get(i, SenderTotals(0, 0, 0, -1, 0))
            keys_used, bytes_used = t.highest_counter + 1, t.highest_end
            if held is not None:
                bytes_used = t.bytes
            messages, sent_bytes = t.counters, t.bytes
            sized = t.messages
        else:
            erased = erased_inbound_counters(kit, i)
            keys_used = (max(erased) + 1) if erased else 0
            bytes_used = zero_prefix(kit, i) if held is None else erased_bytes_within(kit, held)
            messages, sent_bytes = len(erased), bytes_used
            sized = messages if bytes_used else 0
        avg = sent_bytes / sized if sized and sent_bytes else float(DEFAULT_AVERAGE_SIZE)
        texts = history.recent_sizes(i, Kind.TEXT, RECENT_TEXTS) if history is not None else []
        text_size = sum(texts) / len(texts) if texts else float(DEFAULT_AVERAGE_SIZE)
        size = e if held is None else held.total
        keys_left = max(0, k - keys_used)
        bytes_left = max(0, size - bytes_used)
        members.append(
            MemberUsage(
                index=i,
                name=m.name,
                is_self=i == h.self_index,
                bytes_used=bytes_used,
                bytes_left=bytes_left,
                keys_used=keys_used,
                keys_left=keys_left,
                messages=messages,
                average_size=avg,
                messages_left=min(keys_left, math.floor(bytes_left / text_size)),
                slice_len=e,
                auth_keys=k,
                text_size=text_size,
                pad_total=-1 if held is None else held.total,
                extents=held,
                failed=failed.get(i, 0),
            )
        )
    if store is not None:
        pad_erased = store.erased_pad_bytes()
    elif extents is not None:
        pad_erased = sum(erased_bytes_within(kit, x) for x in extents)
    else:
        pad_erased = sum(
            erased_extent(kit, i) if i == h.self_index else zero_prefix(kit, i) for i in range(h.n)
        )
    return KitUsage(
        slice_len=e,
        auth_keys=k,
        members=tuple(members),
        keys_total=2 * (h.n - 1) * k,
        keys_erased=(
            count_erased_keys(kit) if scan_kit or store is None else store.erased_key_count(h.n)
        ),
        pad_bytes_total=h.n * e,
        pad_bytes_erased=pad_erased,
        key_len=KEY_LEN if not two else MASK_LEN,
    )
