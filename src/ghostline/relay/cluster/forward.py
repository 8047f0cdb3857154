"""Forwarded appends between nodes: the request and its named replies (pure codec).

A node that does not own a room sends its share of a commit for that room to the owner
on `ghostline.append.<owner>` (NATS request/reply). Request body, big-endian:

    u8  version (1)
    16s room
    repeated: u16 sender, u64 counter, u32 length, then the sealed bytes

The owner answers with one `Reply` and its body:

- STORED: per forwarded message, in order, u64 seq and u8 duplicate (0 or 1); sent only
  once JetStream acknowledged them.
- FAILED: the owner could not store them (its JetStream error, as text): the forwarder
  fails its commit like a local store failure.
- CLOSING: the owner is shutting down: the forwarder asks the next node in line.

Both ends check every length (the bytes come over the network).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence

from ...errors import LocalError
from ..backend import Appended, Publish

VERSION = 1
ROOM_LEN = 16
_ITEM = struct.Struct(">HQI")
_RESULT = struct.Struct(">QB")
REQUEST_OVERHEAD = 1 + ROOM_LEN
MAX_REASON = 200


class Reply(enum.IntEnum):
    STORED = 0
    FAILED = 1
    CLOSING = 2


class ForwardError(LocalError):
    """A forwarded append or its reply does not decode."""


def item_size(p: Publish) -> int:
    return _ITEM.size + len(p.sealed)


def encode_request(room: bytes, items: Sequence[Publish]) -> bytes:
    parts = [bytes([VERSION]), room]
    for p in items:
        parts += (_ITEM.pack(p.sender, p.counter, len(p.sealed)), p.sealed)
    return b"".join(parts)


def decode_request(data: bytes) -> tuple[bytes, list[Publish]]:
    if len(data) < REQUEST_OVERHEAD or data[0] != VERSION:
        raise ForwardError("a forwarded append has no room or an unknown version")
    room = data[1:REQUEST_OVERHEAD]
    pos, items = REQUEST_OVERHEAD, []
    while pos < len(data):
        if pos + _ITEM.size > len(data):
            raise ForwardError("a forwarded append ends inside an item header")
        sender, counter, length = _ITEM.unpack_from(data, pos)
        pos += _ITEM.size
        if pos + length > len(data):
            raise ForwardError("a forwarded append ends inside a message")
        items.append(Publish(room, sender, counter, data[pos : pos + length]))
        pos += length
    return room, items


def encode_stored(results: Sequence[Appended]) -> bytes:
    return bytes([Reply.STORED]) + b"".join(_RESULT.pack(r.seq, r.duplicate) for r in results)


def encode_failed(reason: str) -> bytes:
    return bytes([Reply.FAILED]) + reason.encode("utf-8", "replace")[:MAX_REASON]


def encode_closing() -> bytes:
    return bytes([Reply.CLOSING])


def decode_reply(data: bytes, expected: int) -> tuple[Reply, list[Appended], str]:
    """(kind, results for STORED, reason for FAILED) of an owner's reply to a forward of
    `expected` messages."""
    try:
        kind = Reply(data[0])
    except (IndexError, ValueError) as err:
        raise ForwardError("an owner's reply has an unknown kind") from err
    body = data[1:]
    if kind is Reply.STORED:
        if len(body) != _RESULT.size * expected:
            raise ForwardError(f"an owner answered {len(body)} bytes for {expected} messages")
        results = []
        for seq, duplicate in _RESULT.iter_unpack(body):
            if seq < 1 or duplicate > 1:
                raise ForwardError("an owner answered a seq or flag out of range")
            results.append(Appended(seq, bool(duplicate)))
        return kind, results, ""
    if kind is Reply.FAILED:
        return kind, [], body[:MAX_REASON].decode("utf-8", "replace")
    return kind, [], ""
