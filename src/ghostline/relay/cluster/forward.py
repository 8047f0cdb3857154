"""Forwarded appends between nodes: the request and its named replies (pure codec).

A node that does not own a room sends its share of a commit for that room to the owner
on `ghostline.append.<owner>` (NATS request/reply); the shares of one commit for rooms
of the same owner go in one request. Request body, big-endian:

    u8  version (2)
    u16 count of rooms
    count x (16s room, u32 length, the room's messages as columns (items.py), in length bytes)

A request holds at least one room and each room at least one message. The owner
answers once, with one reply per room in the request's order:

    u16 count
    count x (u32 length, the room's reply in length bytes)

A request the owner cannot read (damaged, or of another version: nodes of earlier
versions sent version 1, one room per request) is answered with count 0, which answers
no request: the forwarder fails it like a store failure.

A room's reply is a `Reply` kind (u8) and its body, sent only once JetStream
acknowledged what the owner stored:

- STORED_RUN: u64 first: every message was new and they hold seqs first, first + 1, ...
  (the usual answer: one number for the whole share).
- STORED: per message, in order, u64 seq and u8 duplicate (0 or 1).
- FAILED: the owner could not store them (its error, as text): the forwarder fails its
  commit like a local store failure.
- CLOSING: the owner is shutting down: the forwarder asks the next node in line.

Both ends check every length (the bytes come over the network).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence

from ...errors import LocalError
from ..backend import Appended
from . import items as items_codec
from .items import Items, ItemsError

VERSION = 2
ROOM_LEN = 16
_COUNT = struct.Struct(">H")
_SHARE = struct.Struct(f">{ROOM_LEN}sI")
_LENGTH = struct.Struct(">I")
REQUEST_OVERHEAD = 1 + _COUNT.size  # then SHARE_OVERHEAD and the items of each room
SHARE_OVERHEAD = _SHARE.size + 4  # room, length, the items' count
MAX_SHARES = 0xFFFF
_RESULT = struct.Struct(">QB")
_FIRST = struct.Struct(">Q")
MAX_REASON = 200
MAX_SEQ = 2**63 - 1


class Reply(enum.IntEnum):
    STORED = 0
    FAILED = 1
    CLOSING = 2
    STORED_RUN = 3


class ForwardError(LocalError):
    """A forwarded append or its reply does not decode."""


def encode_request(shares: Sequence[tuple[bytes, Items]]) -> bytes:
    """One request carrying each (room, items) share, in order."""
    parts = [bytes([VERSION]), _COUNT.pack(len(shares))]
    for room, items in shares:
        body = items_codec.encode(items)
        parts += (_SHARE.pack(room, len(body)), body)
    return b"".join(parts)


def decode_request(data: bytes) -> list[tuple[bytes, Items]]:
    """The (room, items) shares of a forwarded request, in order."""
    if len(data) < REQUEST_OVERHEAD or data[0] != VERSION:
        raise ForwardError("a forwarded append is too short or of an unknown version")
    (count,) = _COUNT.unpack_from(data, 1)
    if count == 0:
        raise ForwardError("a forwarded append holds no rooms")
    pos = REQUEST_OVERHEAD
    view = memoryview(data)
    shares = []
    for _ in range(count):
        if pos + _SHARE.size > len(data):
            raise ForwardError("a forwarded append ends inside a room's header")
        room, length = _SHARE.unpack_from(data, pos)
        pos += _SHARE.size
        if pos + length > len(data):
            raise ForwardError("a forwarded append is shorter than a room's messages")
        try:
            items = items_codec.decode(view[pos : pos + length])
        except ItemsError as err:
            raise ForwardError(f"a forwarded append does not decode: {err}") from err
        if not len(items):
            raise ForwardError("a forwarded append holds a room without messages")
        shares.append((room, items))
        pos += length
    if pos != len(data):
        raise ForwardError("a forwarded append has bytes after its rooms")
    return shares


def encode_replies(replies: Sequence[bytes]) -> bytes:
    """The owner's one answer: each room's reply (`encode_stored` ...), in order."""
    parts = [_COUNT.pack(len(replies))]
    for reply in replies:
        parts += (_LENGTH.pack(len(reply)), reply)
    return b"".join(parts)


def decode_replies(data: bytes, expected: int) -> list[bytes]:
    """The rooms' replies in an owner's answer to a request of `expected` rooms (each
    then read by `decode_reply`)."""
    if len(data) < _COUNT.size or _COUNT.unpack_from(data, 0)[0] != expected:
        raise ForwardError(f"an owner did not answer for the {expected} rooms it was sent")
    pos, out = _COUNT.size, []
    for _ in range(expected):
        if pos + _LENGTH.size > len(data):
            raise ForwardError("an owner's answer ends inside a room's reply")
        (length,) = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size
        if pos + length > len(data):
            raise ForwardError("an owner's answer is shorter than a room's reply")
        out.append(data[pos : pos + length])
        pos += length
    if pos != len(data):
        raise ForwardError("an owner's answer has bytes after its replies")
    return out


def encode_stored(results: Sequence[Appended]) -> bytes:
    first = results[0].seq if results else 0
    if all(r.seq == first + i and not r.duplicate for i, r in enumerate(results)):
        return bytes([Reply.STORED_RUN]) + _FIRST.pack(first)
    return bytes([Reply.STORED]) + b"".join(_RESULT.pack(r.seq, r.duplicate) for r in results)


def encode_failed(reason: str) -> bytes:
    return bytes([Reply.FAILED]) + reason.encode("utf-8", "replace")[:MAX_REASON]


def encode_closing() -> bytes:
    return bytes([Reply.CLOSING])


def decode_reply(data: bytes, expected: int) -> tuple[Reply, list[Appended], str]:
    """(kind, results if stored, reason if failed) of an owner's reply to a forward of
    `expected` messages."""
    try:
        kind = Reply(data[0])
    except (IndexError, ValueError) as err:
        raise ForwardError("an owner's reply has an unknown kind") from err
    body = data[1:]
    if kind is Reply.STORED_RUN:
        if len(body) != _FIRST.size:
            raise ForwardError(f"an owner answered a run in {len(body)} bytes")
        (first,) = _FIRST.unpack(body)
        if not 1 <= first <= MAX_SEQ - expected:
            raise ForwardError("an owner answered a seq out of range")
        new = tuple.__new__  # an Appended per message, without its constructor's frame
        return kind, [new(Appended, (s, False, ())) for s in range(first, first + expected)], ""
    if kind is Reply.STORED:
        if len(body) != _RESULT.size * expected:
            raise ForwardError(f"an owner answered {len(body)} bytes for {expected} messages")
        results = []
        for seq, duplicate in _RESULT.iter_unpack(body):
            if not 1 <= seq <= MAX_SEQ or duplicate > 1:
                raise ForwardError("an owner answered a seq or flag out of range")
            results.append(Appended(seq, bool(duplicate)))
        return kind, results, ""
    if kind is Reply.FAILED:
        return kind, [], body[:MAX_REASON].decode("utf-8", "replace")
    return kind, [], ""
