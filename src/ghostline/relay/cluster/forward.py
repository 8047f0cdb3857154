"""Forwarded appends between nodes: the request and its named replies (pure codec).

A node that does not own a room sends its share of a commit for that room to the owner
on `ghostline.append.<owner>` (NATS request/reply). Request body, big-endian:

    u8  version (1)
    16s room
    the messages, as columns (items.py)

The owner answers with one `Reply` kind (u8) and its body, sent only once JetStream
acknowledged what it stored:

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

VERSION = 1
ROOM_LEN = 16
REQUEST_OVERHEAD = 1 + ROOM_LEN + 4
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


def encode_request(room: bytes, items: Items) -> bytes:
    return bytes([VERSION]) + room + items_codec.encode(items)


def decode_request(data: bytes) -> tuple[bytes, Items]:
    if len(data) < REQUEST_OVERHEAD or data[0] != VERSION:
        raise ForwardError("a forwarded append has no room or an unknown version")
    try:
        return data[1 : 1 + ROOM_LEN], items_codec.decode(data, 1 + ROOM_LEN)
    except ItemsError as err:
        raise ForwardError(f"a forwarded append does not decode: {err}") from err


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
