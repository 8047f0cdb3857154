"""The chunk: one JetStream message holding one room's share of one commit (pure codec).

A room's stream subject holds one chunk per commit, in seq order, like one row per room
per commit in the SQLite store. A chunk carries everything the cluster needs to stay
exact with a single write: the messages, each one's (sender, counter), the room's
running byte total, and the highest counter each sender ever had stored in the room
(`tops`). A chunk with no messages is a marker: it keeps a room's numbering (and its
tops) after the age limit removed everything.

Body, big-endian:

    u8  version (1)
    u64 last     seq of the chunk's last message (a marker: the room's head)
    u32 count    messages in the chunk (0: a marker)
    u64 total    the room's running byte total after this chunk
    8s  write id random per write: recognises this node's own write after a lost ack
    u8  len, then the writing node's name (ASCII, for operators)
    u16 T, then T x (u16 sender, u64 top)     sorted by sender
    count x (u16 sender, u64 counter, u32 length)
    the sealed messages, concatenated

Every field is range-checked on decode (`ChunkError`): the bytes come from the network.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...errors import LocalError
from ..backend import Publish, StoredMessage
from ..config import Retention

VERSION = 1
_HEAD = struct.Struct(">BQIQ8sB")
_TOP = struct.Struct(">HQ")
_ENTRY = struct.Struct(">HQI")
_U16 = struct.Struct(">H")
MAX_SEQ = 2**63 - 1  # seqs and totals stay far below; a bigger one is damage
WRITE_ID_LEN = 8


class ChunkError(LocalError):
    """A stored chunk is damaged (it does not decode within its own bounds)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    last: int  # seq of the last message (a marker: the room's head)
    total: int  # the room's running byte total after this chunk
    tops: Mapping[int, int]  # sender -> highest counter ever stored in the room
    senders: tuple[int, ...]
    counters: tuple[int, ...]
    sizes: tuple[int, ...]
    data: bytes  # the sealed messages, concatenated
    write_id: bytes = bytes(WRITE_ID_LEN)
    node: str = ""

    @property
    def count(self) -> int:
        return len(self.sizes)

    @property
    def first(self) -> int:
        """Seq of the first message (last + 1 for a marker)."""
        return self.last - self.count + 1

    def messages(self, after: int = 0) -> list[StoredMessage]:
        """The chunk's messages with seq > after, in order."""
        out: list[StoredMessage] = []
        pos, seq = 0, self.first
        for size in self.sizes:
            if seq > after:
                out.append(StoredMessage(seq, self.data[pos : pos + size]))
            pos += size
            seq += 1
        return out

    def totals_before(self) -> list[int]:
        """The room's running byte total before each message of the chunk."""
        out = []
        running = self.total - len(self.data)
        for size in self.sizes:
            out.append(running)
            running += size
        return out

    def find(self, sender: int, counter: int) -> int | None:
        """The seq of (sender, counter) in this chunk, if it is here."""
        for i, (s, c) in enumerate(zip(self.senders, self.counters, strict=True)):
            if s == sender and c == counter:
                return self.first + i
        return None


def build(
    last: int,
    total: int,
    tops: Mapping[int, int],
    items: Sequence[Publish],
    write_id: bytes,
    node: str,
) -> tuple[bytes, Chunk]:
    """The body of a chunk holding `items` (seqs last - len + 1 .. last), and the chunk."""
    name = node.encode("ascii")
    senders = tuple(p.sender for p in items)
    counters = tuple(p.counter for p in items)
    sizes = tuple(len(p.sealed) for p in items)
    data = b"".join([p.sealed for p in items])
    head = [
        _HEAD.pack(VERSION, last, len(items), total, write_id, len(name)),
        name,
        _U16.pack(len(tops)),
    ]
    head += [_TOP.pack(s, tops[s]) for s in sorted(tops)]
    if items:
        flat: list[int] = []
        for entry in zip(senders, counters, sizes, strict=True):
            flat += entry
        head.append(struct.pack(">" + "HQI" * len(items), *flat))
    body = b"".join(head) + data
    chunk = Chunk(last, total, dict(tops), senders, counters, sizes, data, write_id, node)
    return body, chunk


def peek_last(body: bytes) -> int:
    """The `last` field of a chunk body, without decoding the rest."""
    if len(body) < _HEAD.size or body[0] != VERSION:
        raise ChunkError(f"not a chunk ({len(body)} bytes)")
    return int.from_bytes(body[1:9], "big")


def decode(body: bytes) -> Chunk:
    """A chunk from its stored body; ChunkError if it is not a well-formed one."""
    try:
        version, last, count, total, write_id, name_len = _HEAD.unpack_from(body, 0)
    except struct.error as err:
        raise ChunkError(f"a chunk of {len(body)} bytes is too short") from err
    if version != VERSION:
        raise ChunkError(f"unknown chunk version {version}")
    if not (count <= last <= MAX_SEQ and total <= MAX_SEQ):
        raise ChunkError("a chunk's seq or total is out of range")
    pos = _HEAD.size
    node = body[pos : pos + name_len]
    pos += name_len
    try:
        (ntops,) = _U16.unpack_from(body, pos)
        pos += _U16.size
        flat_tops = struct.unpack_from(">" + "HQ" * ntops, body, pos)
        pos += _TOP.size * ntops
        flat = struct.unpack_from(">" + "HQI" * count, body, pos)
    except struct.error as err:
        raise ChunkError("a chunk ends inside its own index") from err
    pos += _ENTRY.size * count
    sizes = flat[2::3]
    data = body[pos:]
    if len(node) != name_len or sum(sizes) != len(data) or len(data) > total:
        raise ChunkError("a chunk's lengths do not add up")
    tops = dict(zip(flat_tops[0::2], flat_tops[1::2], strict=True))
    return Chunk(
        last, total, tops, flat[0::3], flat[1::3], sizes, data, write_id,
        node.decode("ascii", "replace"),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Floor:
    """What retention still holds of a room, given its head: a message is held when it
    is the newest, or when its seq is at least `seq` and the room's running total before
    it at least `total` (the age limit removes whole chunks, so it needs no floor)."""

    head: int
    seq: int
    total: int

    @classmethod
    def of(cls, head: int, head_total: int, retention: Retention) -> Floor:
        return cls(head, head - retention.max_messages + 1, head_total - retention.max_bytes)

    def holds(self, seq: int, total_before: int) -> bool:
        return seq == self.head or (seq >= self.seq and total_before >= self.total)

    def held(self, chunk: Chunk, after: int = 0) -> list[StoredMessage]:
        """The messages of `chunk` with seq > after that retention still holds."""
        below = chunk.last < self.seq or chunk.total < self.total
        if below and chunk.last != self.head:  # wholly below the count or the byte floor
            return []
        messages = chunk.messages(after)
        if not messages:
            return messages
        befores = chunk.totals_before()[chunk.count - len(messages) :]
        return [m for m, b in zip(messages, befores, strict=True) if self.holds(m.seq, b)]
