"""Exact duplicate detection without a receipt per message.

Every chunk carries `tops`: per sender, the highest counter the room ever stored for it.
Senders count up, so almost every message is IN ORDER: its counter is above its
sender's top in the room's last chunk, and it is new without any look-up. A counter at
or below the top is looked up, exactly:

- An in-order message sits in the FIRST chunk whose top for its sender reached its
  counter (the tops only grow along the room), found by binary search over the room's
  chunks and then that chunk's (sender, counter) list.
- A message stored OUT of order (its counter was already at or below its sender's top:
  a resend after retention removed the original, or a client sending out of order) has
  a receipt, `ghostline.late.<k>.<room>.<sender>.<counter>`, holding its seq. The
  receipt is written BEFORE its chunk, so it can point at a chunk that was never
  stored (a write that lost a race or died): every receipt is checked against the chunk
  that holds its seq.

Either way a message counts as held only while retention still holds it (`Floor`).
Look-ups read from each stream's leader (a replica may lag behind the head an append
chains to). They are rare (a client resending after a failover), and each costs a few
reads: O(log chunks).
"""

from __future__ import annotations

import struct

from ..config import Retention
from .chunks import Chunk, Floor
from .layout import Layout
from .paging import Reader, Stored

Key = tuple[int, int]  # (sender, counter)
_SEQ = struct.Struct(">Q")
MAX_RECEIPTS = 64  # receipts read per key (one per write attempt of it: normally one)


def encode_receipt(seq: int) -> bytes:
    return _SEQ.pack(seq)


class Lookup:
    """One room's look-ups against one head (its last chunk): probes are cached."""

    def __init__(self, reader: Reader, room: bytes) -> None:
        self.reader = reader
        self.layout: Layout = reader.layout
        self.room = room

    async def held(self, head: Stored, keys: list[Key], retention: Retention) -> dict[Key, int]:
        """The seqs of those `keys` the room holds (each counter at most its sender's
        top in `head`, the room's last chunk)."""
        floor = Floor.of(head.chunk.last, head.chunk.total, retention)
        found: dict[Key, int] = {}
        for key in keys:
            seq = await self._in_order(head, key, floor)
            if seq is None:
                seq = await self._late(head, key, floor)
            if seq is not None:
                found[key] = seq
        return found

    async def _in_order(self, head: Stored, key: Key, floor: Floor) -> int | None:
        sender, counter = key
        stored = await self._first_reaching(head, sender, counter)
        if stored is None:
            return None
        return _held_seq(stored.chunk, key, floor)

    async def _first_reaching(self, head: Stored, sender: int, counter: int) -> Stored | None:
        """The room's first chunk whose top for `sender` is at least `counter`."""
        return await self.reader.first(
            self.room, head, lambda s: s.chunk.tops.get(sender, -1) >= counter
        )

    async def _late(self, head: Stored, key: Key, floor: Floor) -> int | None:
        """The seq a receipt gives for `key`, checked against the chunk holding it."""
        sender, counter = key
        stream = self.layout.stream(self.room)
        subject = f"{self.layout.late_prefix(self.room)}{sender}.{counter}"
        receipts: list[bytes] = []
        start = 1
        while len(receipts) < MAX_RECEIPTS:
            got = await self.reader.leader_get(stream, {"seq": start, "next_by_subj": subject})
            if got is None:
                break
            receipts.append(got[1])
            start = got[0] + 1
        for body in reversed(receipts):
            if len(body) != _SEQ.size:
                continue
            (seq,) = _SEQ.unpack(body)
            if not 1 <= seq <= head.chunk.last:
                continue
            stored = await self._holding(head, seq)
            if stored is not None and stored.chunk.find(sender, counter) == seq:
                return _held_seq(stored.chunk, key, floor)
        return None

    async def _holding(self, head: Stored, seq: int) -> Stored | None:
        """The room's chunk holding `seq`."""
        found = await self.reader.first(self.room, head, lambda s: s.chunk.last >= seq)
        return found if found.chunk.first <= seq <= found.chunk.last else None


def _held_seq(chunk: Chunk, key: Key, floor: Floor) -> int | None:
    seq = chunk.find(*key)
    if seq is None:
        return None
    return seq if floor.holds(seq, chunk.totals_before()[seq - chunk.first]) else None
