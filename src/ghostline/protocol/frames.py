"""Relay and presence frames (protocol-v1 section 8), sans-IO.

Feed received bytes to a `FrameDecoder` and get whole frames back; build frames with
`encode_frame` or the body helpers below. The size limit is enforced from the 4-byte
length prefix, before any of the body is buffered. Nothing here touches pads or keys:
the blind relay and the client both use it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ..errors import ProtocolError
from .envelope import MAX_MEMBERS, PAD_ID_LEN

DEFAULT_MAX_FRAME = (1 << 20) + 256
JOIN_CONTEXT = b"ghostline-join-v1"
NONCE_LEN = 32
SIGNATURE_LEN = 64
VERIFY_KEY_LEN = 32
MAX_PING = 64
STORE_ID_LEN = 16

_LEN = struct.Struct(">I")
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_SEQ_COUNTER = struct.Struct(">QQ")
_HELLO_HEAD = struct.Struct(">16sHH")
# The largest HELLO frame's N (type + body: room, member, n, 255 verify keys, resume_after):
# no relay may cap frames below it.
MAX_HELLO_FRAME = 1 + _HELLO_HEAD.size + MAX_MEMBERS * VERIFY_KEY_LEN + 8
_WELCOME = struct.Struct(">Q16s")


class FrameType(IntEnum):
    HELLO = 0x01
    PROVE = 0x02
    PUBLISH = 0x03
    PING = 0x04
    CHALLENGE = 0x81
    WELCOME = 0x82
    DELIVER = 0x83
    ACCEPTED = 0x84
    PONG = 0x85
    ERROR = 0x8F
    PRESENCE = 0x90
    ONLINE = 0x91
    OFFLINE = 0x92


class ErrorCode(IntEnum):
    MALFORMED = 1
    TOO_LARGE = 2
    BAD_HANDSHAKE = 3
    ROSTER_MISMATCH = 4
    BAD_SIGNATURE = 5
    BAD_PUBLISH = 6
    RATE_LIMITED = 7
    RELAY_FULL = 8
    INTERNAL = 9


class Port(IntEnum):
    """The byte that names the port inside a PROVE signature."""

    RELAY = 0x01
    PRESENCE = 0x02


# ERROR reasons that name a mistake the client can fix; a client may recognise them by
# their exact text (and show them as they are). Each comes with ERROR 3, bad handshake.
REASON_PRESENCE_PORT = "this is the presence port: connect to the relay port"  # a relay PROVE
REASON_RELAY_PORT = "this is the relay port: connect to the presence port"  # a presence PROVE
REASON_NOT_TLS = "this port does not speak TLS: connect without --tls"  # a ClientHello came
REASON_TLS_ONLY = "this port speaks only TLS: connect with --tls"  # plain bytes came


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    body: bytes


def encode_frame(frame_type: int, body: bytes = b"") -> bytes:
    return _LEN.pack(len(body) + 1) + bytes((frame_type,)) + body


class FrameDecoder:
    """Turns a byte stream into frames. Raises ProtocolError on a bad length prefix."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size == 0:
                raise ProtocolError(ErrorCode.MALFORMED, "empty frame (length 0)")
            if size > self.max_frame:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"frame of {size} bytes exceeds the {self.max_frame} limit"
                )
            if end - pos - 4 < size:
                break
            frames.append(Frame(buf[pos + 4], bytes(buf[pos + 5 : pos + 4 + size])))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)


# --- bodies --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    room: bytes
    member: int
    roster: tuple[bytes, ...]  # n Ed25519 verify keys, 32 bytes each
    resume_after: int

    def encode(self) -> bytes:
        return (
            _HELLO_HEAD.pack(self.room, self.member, len(self.roster))
            + b"".join(self.roster)
            + _U64.pack(self.resume_after)
        )

    @classmethod
    def decode(cls, body: bytes) -> Hello:
        if len(body) < _HELLO_HEAD.size:
            raise ProtocolError(ErrorCode.BAD_HANDSHAKE, "HELLO is too short")
        room, member, n = _HELLO_HEAD.unpack_from(body, 0)
        if len(body) != _HELLO_HEAD.size + n * VERIFY_KEY_LEN + 8:
            raise ProtocolError(ErrorCode.BAD_HANDSHAKE, "HELLO length does not match its n")
        if not 2 <= n <= 255 or member >= n:
            raise ProtocolError(ErrorCode.BAD_HANDSHAKE, "HELLO names an impossible member or n")
        at = _HELLO_HEAD.size
        roster = tuple(
            body[at + i * VERIFY_KEY_LEN : at + (i + 1) * VERIFY_KEY_LEN] for i in range(n)
        )
        (resume_after,) = _U64.unpack_from(body, at + n * VERIFY_KEY_LEN)
        return cls(room, member, roster, resume_after)


def join_statement(port: Port, room: bytes, member: int, nonce: bytes) -> bytes:
    """What PROVE signs: "ghostline-join-v1" || port || room || member || nonce."""
    return JOIN_CONTEXT + bytes((port,)) + room + _U16.pack(member) + nonce


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def decode_u64(body: bytes, what: str) -> int:
    if len(body) != 8:
        raise ProtocolError(ErrorCode.MALFORMED, f"{what} body must be 8 bytes")
    return int(_U64.unpack(body)[0])


@dataclass(frozen=True, slots=True)
class Welcome:
    """WELCOME: the room's newest seq, and the identity of the store that numbered it.

    `store_id` is 16 random bytes made when the relay's store was created (the same on
    every node of a cluster): seqs are comparable only under the same store_id.
    """

    head: int
    store_id: bytes

    def encode(self) -> bytes:
        return encode_frame(FrameType.WELCOME, _WELCOME.pack(self.head, self.store_id))

    @classmethod
    def decode(cls, body: bytes) -> Welcome:
        if len(body) != _WELCOME.size:
            raise ProtocolError(
                ErrorCode.BAD_HANDSHAKE, f"WELCOME must carry {_WELCOME.size} bytes"
            )
        head, store_id = _WELCOME.unpack(body)
        return cls(int(head), bytes(store_id))


def encode_deliver(seq: int, sealed: bytes) -> bytes:
    return encode_frame(FrameType.DELIVER, _U64.pack(seq) + sealed)


def decode_deliver(body: bytes) -> tuple[int, bytes]:
    if len(body) < 8:
        raise ProtocolError(ErrorCode.MALFORMED, "DELIVER is too short")
    return int(_U64.unpack_from(body, 0)[0]), body[8:]


def encode_accepted(seq: int, counter: int) -> bytes:
    return encode_frame(FrameType.ACCEPTED, _SEQ_COUNTER.pack(seq, counter))


def decode_accepted(body: bytes) -> tuple[int, int]:
    if len(body) != 16:
        raise ProtocolError(ErrorCode.MALFORMED, "ACCEPTED body must be 16 bytes")
    seq, counter = _SEQ_COUNTER.unpack(body)
    return int(seq), int(counter)


def encode_error(code: int, reason: str) -> bytes:
    return encode_frame(FrameType.ERROR, _U16.pack(code) + reason.encode("utf-8"))


def decode_error(body: bytes) -> tuple[int, str]:
    if len(body) < 2:
        return ErrorCode.MALFORMED, "malformed ERROR frame"
    return int(_U16.unpack_from(body, 0)[0]), body[2:].decode("utf-8", "replace")


def encode_member(frame_type: int, member: int) -> bytes:
    return encode_frame(frame_type, _U16.pack(member))


def decode_member(body: bytes) -> int:
    if len(body) != 2:
        raise ProtocolError(ErrorCode.MALFORMED, "member body must be 2 bytes")
    return int(_U16.unpack(body)[0])


def encode_presence(members: list[int] | tuple[int, ...]) -> bytes:
    return encode_frame(
        FrameType.PRESENCE, _U16.pack(len(members)) + b"".join(_U16.pack(m) for m in members)
    )


def decode_presence(body: bytes) -> tuple[int, ...]:
    if len(body) < 2:
        raise ProtocolError(ErrorCode.MALFORMED, "PRESENCE is too short")
    (count,) = _U16.unpack_from(body, 0)
    if len(body) != 2 + 2 * count:
        raise ProtocolError(ErrorCode.MALFORMED, "PRESENCE length does not match its count")
    return tuple(_U16.unpack_from(body, 2 + 2 * i)[0] for i in range(count))


assert PAD_ID_LEN == 16
