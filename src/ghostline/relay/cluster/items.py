"""One room's messages as columns: the shape they travel and are stored in (pure codec).

A commit's messages for a room cross the cluster as columns (every sender, every
counter, every length, then the sealed bytes back to back) rather than one record each,
so building, forwarding and storing them costs a few calls per batch, not per message.
Chunks (chunks.py) and forwarded appends (forward.py) carry this section:

    u32 count
    count x (u16 sender, u64 counter, u32 length)
    the sealed messages, concatenated
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...errors import LocalError
from ..backend import Publish, StoredMessage

_COUNT = struct.Struct(">I")
ENTRY_SIZE = 14  # u16 sender, u64 counter, u32 length


class ItemsError(LocalError):
    """A batch of messages does not decode within its own bounds."""


@dataclass(frozen=True, slots=True)
class Items:
    senders: Sequence[int]
    counters: Sequence[int]
    sizes: Sequence[int]
    data: bytes  # the sealed messages, concatenated
    _offsets: list[int] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def of(cls, publishes: Sequence[Publish]) -> Items:
        return cls(
            [p.sender for p in publishes],
            [p.counter for p in publishes],
            [len(p.sealed) for p in publishes],
            b"".join([p.sealed for p in publishes]),
        )

    def __len__(self) -> int:
        return len(self.sizes)

    def offset(self, i: int) -> int:
        """Where message i starts in `data`."""
        if not self._offsets:
            self._offsets.extend(itertools.accumulate(self.sizes, initial=0))
        return self._offsets[i]

    def sealed(self, i: int) -> bytes:
        start = self.offset(i)
        return self.data[start : start + self.sizes[i]]

    def key(self, i: int) -> tuple[int, int]:
        return self.senders[i], self.counters[i]

    def part(self, start: int, end: int) -> Items:
        if start == 0 and end >= len(self):
            return self
        return Items(
            self.senders[start:end],
            self.counters[start:end],
            self.sizes[start:end],
            self.data[self.offset(start) : self.offset(end)],
        )

    def messages(self, first: int, after: int = 0) -> list[StoredMessage]:
        """The messages as stored ones, numbered from seq `first`, those above `after`."""
        skip = max(0, after + 1 - first)
        if skip >= len(self):
            return []
        data, out = self.data, []
        pos, seq = self.offset(skip), first + skip
        new = tuple.__new__  # a StoredMessage per message, without its constructor's frame
        for size in self.sizes[skip:]:
            out.append(new(StoredMessage, (seq, data[pos : pos + size])))
            pos += size
            seq += 1
        return out


def join(parts: Sequence[Items]) -> Items:
    if len(parts) == 1:
        return parts[0]
    return Items(
        [s for p in parts for s in p.senders],
        [c for p in parts for c in p.counters],
        [n for p in parts for n in p.sizes],
        b"".join([p.data for p in parts]),
    )


def encode(items: Items) -> bytes:
    n = len(items)
    flat: list[int] = [0] * (3 * n)
    flat[0::3], flat[1::3], flat[2::3] = items.senders, items.counters, items.sizes
    return _COUNT.pack(n) + struct.pack(">" + "HQI" * n, *flat) + items.data


def decode(body: bytes | memoryview, pos: int = 0) -> Items:
    """The items encoded at `pos`, running to the end of `body`."""
    try:
        (n,) = _COUNT.unpack_from(body, pos)
        pos += _COUNT.size
        if ENTRY_SIZE * n > len(body) - pos:
            raise ItemsError("a batch of messages is shorter than its index")
        flat = struct.unpack_from(">" + "HQI" * n, body, pos)
    except struct.error as err:
        raise ItemsError("a batch of messages ends inside its own index") from err
    pos += ENTRY_SIZE * n
    sizes = flat[2::3]
    data = bytes(body[pos:])
    if sum(sizes) != len(data):
        raise ItemsError("a batch's lengths do not add up")
    return Items(flat[0::3], flat[1::3], sizes, data)
