"""Where a member resumes in a relay's stream of seqs: pure logic, no I/O, no clock.

Relay seqs are not authenticated (protocol-v1 section 8), and since protocol-v2 section 8
they are comparable only under one `store_id`. Three small value types keep a hostile
relay or network from making a member skip a message without saying so:

- `RelayCursor`: the seqs of one store that are settled. `upto` moves only over a
  CONTIGUOUS run of settled seqs (a verified message, an own message the relay
  accepted, or a byte-identical copy of a message the member has, at the seq it came
  as; never a rejected frame); seqs settled above a hole wait in `seen`. A reordered
  or rewritten seq can therefore leave a hole, never jump the cursor over one. A
  member resumes after `upto`, so a hole is asked for again.
- `Anchor` and `AnchorCheck`: the highest settled seq whose frame the member knows, and
  that frame's digest. Resuming just before it, the relay must send that very frame
  again; another frame there (or a head below the cursor) means the store went back
  (restored from a backup under the same `store_id`) or was replaced, and the member
  reads it again from seq 0 instead of skipping what is now stored at reused seqs.
- `SeqGuard`: refuses a seq the relay cannot have assigned yet on this connection.
- `GapWatch`: decides, for one connection, when a hole has waited long enough that the
  relay should be asked again (`Refetch`), or that it never fills and the member must
  be told and step over it (`Lost`). "Never" means: the seqs were still missing
  `wait` seconds after a later seq was settled, on a connection that had asked the
  relay for everything after the cursor (a hole that appeared among live messages is
  first asked for again on a fresh connection).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from ..errors import ProtocolError
from .frames import SEQ_LIMIT, ErrorCode

__all__ = [
    "MAX_SEEN",
    "SEQ_LIMIT",
    "Anchor",
    "AnchorCheck",
    "AnchorVerdict",
    "GapWatch",
    "Lost",
    "Refetch",
    "RelayCursor",
    "SeqGuard",
    "frame_digest",
]

# Seqs settled above a hole that a member keeps (8 bytes each in its state database).
# Past this, the lowest hole is given up as lost rather than the list growing.
MAX_SEEN = 4096

_U64 = struct.Struct(">Q")
DIGEST_LEN = 32


def frame_digest(sealed: bytes) -> bytes:
    """What tells one sealed message from another, byte for byte (SHA-256). A member
    keeps it for every message it sealed or accepted, so it can tell a genuine copy
    from a forgery that names the same sender and counter."""
    return hashlib.sha256(sealed).digest()


@dataclass(frozen=True, slots=True)
class RelayCursor:
    """The settled seqs of one relay store.

    `store_id` is None for a cursor kept before relays named their store: it is taken
    to belong to the first store a relay names.
    """

    store_id: bytes | None
    upto: int = 0  # every seq <= upto is settled (or was given up as lost)
    seen: frozenset[int] = field(default_factory=frozenset)  # settled seqs above upto+1

    def is_settled(self, seq: int) -> bool:
        return seq <= self.upto or seq in self.seen

    def settle(self, seqs: Iterable[int]) -> tuple[RelayCursor, list[tuple[int, int]]]:
        """This cursor with `seqs` settled, and the holes given up to keep `seen`
        within MAX_SEEN (first, last seq of each; usually none)."""
        seen = set(self.seen)
        for seq in seqs:
            if not 0 < seq < SEQ_LIMIT:
                raise ValueError(f"seq {seq} is out of range")
            if seq > self.upto:
                seen.add(seq)
        cursor = _absorb(self.store_id, self.upto, seen)
        lost: list[tuple[int, int]] = []
        while len(cursor.seen) > MAX_SEEN:
            first, last = cursor.gaps()[0]
            lost.append((first, last))
            cursor = cursor.give_up_to(last)
        return cursor, lost

    def give_up_to(self, last: int) -> RelayCursor:
        """Step over every seq up to `last`: missing ones are lost for good."""
        if last <= self.upto:
            return self
        return _absorb(self.store_id, last, {s for s in self.seen if s > last})

    def gaps(self) -> list[tuple[int, int]]:
        """The holes below the highest settled seq: (first, last) missing seq of each."""
        holes = []
        expected = self.upto + 1
        for seq in sorted(self.seen):
            if seq > expected:
                holes.append((expected, seq - 1))
            expected = seq + 1
        return holes

    def went_back(self, head: int) -> bool:
        """The relay's head is below what this cursor settled: its store lost messages
        it had (restored from a backup, or replaced under the same id)."""
        return head < self.upto

    def for_store(self, store_id: bytes) -> RelayCursor:
        """The cursor to use under `store_id`: this one if it belongs there (or to no
        store yet), a fresh one from seq 0 if it belongs to another store."""
        if self.store_id == store_id:
            return self
        if self.store_id is None:
            return RelayCursor(store_id, self.upto, self.seen)
        return RelayCursor(store_id)

    # -- the state database's form -----------------------------------------------

    def seen_blob(self) -> bytes:
        return b"".join(_U64.pack(s) for s in sorted(self.seen))

    @classmethod
    def from_row(cls, store_id: bytes | None, upto: int, seen_blob: bytes) -> RelayCursor:
        """Read what `seen_blob` wrote; ValueError for anything else."""
        if not 0 <= upto < SEQ_LIMIT or len(seen_blob) % 8 or len(seen_blob) > 8 * MAX_SEEN:
            raise ValueError("relay cursor out of range")
        seen = [s for (s,) in _U64.iter_unpack(seen_blob)]
        if any(not upto + 1 < s < SEQ_LIMIT for s in seen):
            raise ValueError("relay cursor out of range")
        return _absorb(store_id, upto, set(seen))


def _absorb(store_id: bytes | None, upto: int, seen: set[int]) -> RelayCursor:
    """Move `upto` over the settled seqs that follow it without a hole."""
    while upto + 1 in seen:
        upto += 1
        seen.discard(upto)
    return RelayCursor(store_id, upto, frozenset(seen))


class SeqGuard:
    """Refuses a seq the relay cannot have assigned yet on one connection.

    Every message a room stores after WELCOME reaches each connection as exactly one
    DELIVER or ACCEPTED, and a room's seqs have no gaps, so the n-th frame with a seq
    above base = max(head at WELCOME, our resume point) carries at most base + n. A
    frame beyond that was forged or corrupted on the way. Frames at or below the base
    are not counted: they must not widen the room a forged seq has.
    """

    def __init__(self, base: int) -> None:
        self.base = base
        self.fresh = 0

    def check(self, seq: int) -> None:
        if not 0 < seq < SEQ_LIMIT:
            raise ProtocolError(ErrorCode.MALFORMED, f"the relay sent seq {seq}, which no room has")
        if seq <= self.base:
            return
        self.fresh += 1
        ceiling = self.base + self.fresh
        if seq > ceiling:
            raise ProtocolError(
                ErrorCode.MALFORMED,
                f"the relay sent seq {seq}, beyond any it can have assigned "
                f"({ceiling}): forged or corrupted in transit",
            )


@dataclass(frozen=True, slots=True)
class Anchor:
    """The highest settled seq (at or below the cursor) whose frame the member knows,
    and the `frame_digest` of that frame."""

    seq: int
    digest: bytes

    def __post_init__(self) -> None:
        if not 0 < self.seq < SEQ_LIMIT or len(self.digest) != DIGEST_LEN:
            raise ValueError("anchor out of range")

    @property
    def resume_after(self) -> int:
        """HELLO's resume_after that makes the relay send the anchor's frame first."""
        return self.seq - 1


class AnchorVerdict(Enum):
    SAME = "same"  # the relay sent the anchor's frame again: its history is ours
    DIVERGED = "diverged"  # another frame at the anchor's seq: the store went back
    UNKNOWN = "unknown"  # a later seq came first: the relay no longer holds the anchor


class AnchorCheck:
    """Checks, on one connection that resumed at `anchor.resume_after`, the first
    frames against the anchor. The relay replays its store in order, so the frame
    at the anchor's seq comes before any later one, if the relay still has it."""

    def __init__(self, anchor: Anchor) -> None:
        self.anchor = anchor
        self.verdict: AnchorVerdict | None = None

    def check(self, seq: int, digest: bytes) -> AnchorVerdict | None:
        """The verdict, once `seq` decides it (then always the same); None before."""
        if self.verdict is None and seq >= self.anchor.seq:
            if seq > self.anchor.seq:
                self.verdict = AnchorVerdict.UNKNOWN
            elif digest == self.anchor.digest:
                self.verdict = AnchorVerdict.SAME
            else:
                self.verdict = AnchorVerdict.DIVERGED
        return self.verdict


@dataclass(frozen=True, slots=True)
class Refetch:
    """Ask the relay again (a fresh connection resuming after the cursor)."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Lost:
    """These seqs never came: tell the member, and step over them."""

    first: int
    last: int


class GapWatch:
    """Decides what to do about holes in the seqs seen on one connection.

    `head` is the head the relay named in WELCOME and `at_welcome` the cursor then:
    the relay was asked for every seq above `at_welcome.upto` up to `head`, in order,
    so a hole among those (or one carried over from an earlier connection) that stays
    open `wait` seconds is `Lost`. A hole that opens among live messages is first
    `Refetch`ed: it may be a frame the network dropped, which the relay still has.
    """

    def __init__(self, wait: float, head: int, at_welcome: RelayCursor) -> None:
        self.wait = wait
        self.head = head
        self._carried = at_welcome.gaps()
        self._opened: dict[int, float] = {}

    def check(self, cursor: RelayCursor, now: float) -> Refetch | Lost | None:
        gaps = cursor.gaps()
        firsts = {first for first, _ in gaps}
        self._opened = {f: t for f, t in self._opened.items() if f in firsts}
        for first, _ in gaps:
            self._opened.setdefault(first, now)
        if not gaps:
            return None
        first, last = gaps[0]
        if now - self._opened[first] < self.wait:
            return None
        asked = first <= self.head or any(a <= first <= b for a, b in self._carried)
        return Lost(first, last) if asked else Refetch(first, last)
