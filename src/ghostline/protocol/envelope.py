"""The public outside of a sealed message (docs/PROTOCOL.md sections 4 and 13): layout
only, no keys.

Both the pad code (`seal.py`, `seal2.py`) and the blind relay read this header, so it
lives here, in a module that imports no pad, key or state code. Suites 1 and 2 share
the layout; suite 2's offset is absolute in the group pad and its L is the padded
plaintext's length.

    offset size field
    0      1    version = 0x01 (suite 1) or 0x02 (suite 2)
    1      1    suite = 0x01 or 0x02, equal to the version
    2      16   pad_id
    18     2    sender
    20     2    n
    22     8    counter
    30     8    offset
    38     4    L (ciphertext length, >= 1)
    42     L    ciphertext
    42+L   16*(n-1) tags, one per recipient r != sender, increasing r
"""

from __future__ import annotations

import struct
from typing import NamedTuple

VERSION = 0x01
SUITE = 0x01
VERSION_2 = 0x02
SUITE_2 = 0x02
# The (version, suite) pairs that exist; a relay accepts these alike.
VERSION_SUITES = ((VERSION, SUITE), (VERSION_2, SUITE_2))
HEADER_LEN = 42
TAG_LEN = 16
PAD_ID_LEN = 16
MIN_MEMBERS = 2
MAX_MEMBERS = 255

# The header in two parts. The first five fields are the same in every message one
# member sends in one room (the relay compares them at once, on its hot path); the last
# three place the message.
_IDENTITY = ">BB16sHH"  # version, suite, pad_id, sender, n
_POSITION = "QQI"  # counter, offset, length
_HEADER = struct.Struct(_IDENTITY + _POSITION)
_IDENTITY_STRUCT = struct.Struct(_IDENTITY)
_POSITION_STRUCT = struct.Struct(">" + _POSITION)
IDENTITY_LEN = _IDENTITY_STRUCT.size
assert _HEADER.size == HEADER_LEN == IDENTITY_LEN + _POSITION_STRUCT.size


class Envelope(NamedTuple):
    """The header fields of a sealed message, as read from its first 42 bytes.

    A NamedTuple rather than a frozen dataclass: opening builds one per message, and
    this is three times cheaper to construct.
    """

    version: int
    suite: int
    pad_id: bytes
    sender: int
    n: int
    counter: int
    offset: int
    length: int


def pack_header(
    pad_id: bytes,
    sender: int,
    n: int,
    counter: int,
    offset: int,
    length: int,
    version: int = VERSION,
    suite: int = SUITE,
) -> bytes:
    """The 42 header bytes of a message; version 1, suite 1 unless told. Its keywords are
    `Envelope`'s fields: `pack_header(**envelope._asdict())` writes an envelope back."""
    return _HEADER.pack(version, suite, pad_id, sender, n, counter, offset, length)


def unpack_header(
    data: bytes | bytearray | memoryview, at: int = 0
) -> tuple[int, int, bytes, int, int, int, int, int]:
    """(version, suite, pad_id, sender, n, counter, offset, length) from the 42 bytes at
    `at`, without building an `Envelope` (the hot path of opening, and the relay's
    check of a PUBLISH in its receive buffer). Caller checks that they are there."""
    return _HEADER.unpack_from(data, at)  # type: ignore[return-value]


def pack_identity(
    pad_id: bytes, sender: int, n: int, version: int = VERSION, suite: int = SUITE
) -> bytes:
    """The first `IDENTITY_LEN` header bytes (version, suite, pad_id, sender, n): what
    every message of `sender` in the group `pad_id` of `n` starts with."""
    return _IDENTITY_STRUCT.pack(version, suite, pad_id, sender, n)


def header_after(head: struct.Struct) -> struct.Struct:
    """A struct of `head`'s fields followed by a header read as (identity, counter,
    offset, length), the identity being its first `IDENTITY_LEN` bytes: one unpack for
    what precedes a header on the wire and the header itself (the relay reads a PUBLISH
    frame's length, type and header at once). `head` is big-endian ('>')."""
    if not head.format.startswith(">"):
        raise ValueError("the header is big-endian: so must be what precedes it")
    return struct.Struct(f"{head.format}{IDENTITY_LEN}s{_POSITION}")


def sealed_length(ciphertext_len: int, n: int) -> int:
    """Bytes on the wire for a message of `ciphertext_len` bytes in a group of `n`."""
    return HEADER_LEN + ciphertext_len + TAG_LEN * (n - 1)


def read_envelope(data: bytes | memoryview) -> Envelope:
    """Read the header of `data`. Raises ValueError when it is shorter than 42 bytes.

    This only reads; deciding whether the fields are acceptable is the caller's job
    (the relay checks framing, `seal.open_sealed` checks everything).
    """
    if len(data) < HEADER_LEN:
        raise ValueError(f"a sealed message is at least {HEADER_LEN} bytes, got {len(data)}")
    return Envelope(*_HEADER.unpack_from(data, 0))
