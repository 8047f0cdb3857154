"""The chunk: one JetStream message holding one room's share of one commit (pure codec).

A room's stream subject holds one chunk per commit, in seq order, like one row per room
per commit in the SQLite store. A chunk carries everything the cluster needs to stay
exact with a single write: the messages, each one's (sender, counter), the room's
running byte total, and the highest counter each sender ever had stored in the room
(`tops`, see dedupe.py). A chunk with no messages is a marker: it keeps a room's
numbering (and its tops) after the age limit removed everything.

Body, big-endian:

    u8  version (1)
    u64 last     seq of the chunk's last message (a marker: the room's head)
    u64 total    the room's running byte total after this chunk
    8s  write id unique per write of a node: tells its own write after a lost ack;
        its first 4 bytes (random per process start) name the writing process
    u8  len, then the writing node's name (ASCII, for operators)
    u16 T, then T x (u16 sender, u64 top)     sorted by sender
    the messages, as columns (items.py)

Every field is range-checked on decode (`ChunkError`): the bytes come from the network.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from ...errors import LocalError
from ..backend import StoredMessage
from ..config import Retention
from . import items as items_codec
from .items import Items, ItemsError

VERSION = 1
_HEAD = struct.Struct(">BQQ8sB")
_TOP = struct.Struct(">HQ")
_U16 = struct.Struct(">H")
MAX_SEQ = 2**63 - 1  # seqs and totals stay far below; a bigger one is damage
WRITE_ID_LEN = 8
WRITER_LEN = 4  # the write id's first bytes: the same for every write of one process
EMPTY = Items((), (), (), b"")


class ChunkError(LocalError):
    """A stored chunk is damaged (it does not decode within its own bounds)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    last: int  # seq of the last message (a marker: the room's head)
    total: int  # the room's running byte total after this chunk
    tops: Mapping[int, int]  # sender -> highest counter ever stored in the room
    items: Items
    write_id: bytes = bytes(WRITE_ID_LEN)
    node: str = ""

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def first(self) -> int:
        """Seq of the first message (last + 1 for a marker)."""
        return self.last - self.count + 1

    def messages(self, after: int = 0) -> list[StoredMessage]:
        """The chunk's messages with seq > after, in order."""
        return self.items.messages(self.first, after)

    def totals_before(self) -> list[int]:
        """The room's running byte total before each message of the chunk."""
        out = []
        running = self.total - len(self.items.data)
        for size in self.items.sizes:
            out.append(running)
            running += size
        return out

    def find(self, sender: int, counter: int) -> int | None:
        """The seq of (sender, counter) in this chunk, if it is here."""
        senders, counters = self.items.senders, self.items.counters
        for i, c in enumerate(counters):
            if c == counter and senders[i] == sender:
                return self.first + i
        return None


def build(
    last: int, total: int, tops: Mapping[int, int], items: Items, write_id: bytes, node: str
) -> tuple[bytes, Chunk]:
    """The body of a chunk holding `items` (seqs last - len + 1 .. last), and the chunk."""
    name = node.encode("ascii")
    head = [_HEAD.pack(VERSION, last, total, write_id, len(name)), name, _U16.pack(len(tops))]
    head += [_TOP.pack(s, tops[s]) for s in sorted(tops)]
    body = b"".join(head) + items_codec.encode(items)
    return body, Chunk(last, total, dict(tops), items, write_id, node)


def peek_last(body: bytes) -> int:
    """The `last` field of a chunk body, without decoding the rest."""
    if len(body) < _HEAD.size or body[0] != VERSION:
        raise ChunkError(f"not a chunk ({len(body)} bytes)")
    return int.from_bytes(body[1:9], "big")


def peek_writer(body: bytes) -> bytes:
    """The first WRITER_LEN bytes of a chunk's write id (a body `peek_last` accepted)."""
    return body[17 : 17 + WRITER_LEN]


def decode(body: bytes) -> Chunk:
    """A chunk from its stored body; ChunkError if it is not a well-formed one."""
    try:
        version, last, total, write_id, name_len = _HEAD.unpack_from(body, 0)
        pos = _HEAD.size
        node = body[pos : pos + name_len]
        pos += name_len
        (ntops,) = _U16.unpack_from(body, pos)
        pos += _U16.size
        flat_tops = struct.unpack_from(">" + "HQ" * ntops, body, pos)
        pos += _TOP.size * ntops
        items = items_codec.decode(body, pos)
    except (struct.error, ItemsError) as err:
        raise ChunkError(f"a chunk of {len(body)} bytes does not decode: {err}") from err
    if version != VERSION:
        raise ChunkError(f"unknown chunk version {version}")
    if len(node) != name_len or not (len(items) <= last <= MAX_SEQ and total <= MAX_SEQ):
        raise ChunkError("a chunk's seq, total or name is out of range")
    if len(items.data) > total:
        raise ChunkError("a chunk holds more bytes than its room's total")
    tops = dict(zip(flat_tops[0::2], flat_tops[1::2], strict=True))
    return Chunk(last, total, tops, items, write_id, node.decode("ascii", "replace"))


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
        first_before = chunk.total - len(chunk.items.data)
        if chunk.first >= self.seq and first_before >= self.total:
            return messages  # wholly held
        befores = chunk.totals_before()[chunk.count - len(messages) :]
        return [m for m, b in zip(messages, befores, strict=True) if self.holds(m.seq, b)]
