"""Relay and presence frames (docs/PROTOCOL.md section 8), sans-IO.

Feed received bytes to a `FrameSplitter` (or a `FrameDecoder`) and get whole frames
back; build frames with `encode_frame` or the body helpers below, which hold every
frame body's layout. The size limit is enforced from the 4-byte length prefix, before
any of the body is buffered. Nothing here touches pads or keys: the blind relay and the
client both use it.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from enum import IntEnum

from ..errors import ProtocolError
from .envelope import MAX_MEMBERS, MIN_MEMBERS, PAD_ID_LEN, header_after

DEFAULT_MAX_FRAME = (1 << 20) + 256
JOIN_CONTEXT = b"ghostline-join-v1"
NONCE_LEN = 32
SIGNATURE_LEN = 64
VERIFY_KEY_LEN = 32
MAX_PING = 64
STORE_ID_LEN = 16
# Seqs count messages: no room reaches 2^63, and a member's state database stores them as
# SQLite's signed 64-bit integers. A relay claiming more is lying.
SEQ_LIMIT = 1 << 63

# N, the length prefix of every frame (what follows: type and body).
FRAME_LENGTH = _LEN = struct.Struct(">I")
# N and the type: what every frame starts with. Public for the relay's hot path, which
# walks the frames a FrameSplitter checked without copying them.
FRAME_HEAD = struct.Struct(">IB")
# A PUBLISH frame's N, type and its sealed message's header: (N, type, identity, counter,
# offset, length), for the relay's hot path, which checks a PUBLISH in one unpack.
PUBLISH_HEAD = header_after(FRAME_HEAD)
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_SEQ_COUNTER = struct.Struct(">QQ")
# Whole DELIVER and ACCEPTED frames, length prefix and type included: the relay builds
# one of each per message, so these are packed in one step.
# Public for the relay's fan-out, which packs a DELIVER head in place per message
# (DELIVER_HEAD.pack(len(sealed) + DELIVER_BODY_HEAD, 0x83, seq)).
DELIVER_HEAD = _DELIVER_HEAD = struct.Struct(">IBQ")  # N, 0x83, seq; the sealed message follows
_ACCEPTED = struct.Struct(">IBQQ")  # N, 0x84, seq, counter
DELIVER_HEAD_LEN = _DELIVER_HEAD.size
DELIVER_BODY_HEAD = _DELIVER_BODY_HEAD = DELIVER_HEAD_LEN - _LEN.size  # type and seq: N counts them
_HELLO_HEAD = struct.Struct(f">{PAD_ID_LEN}sHH")  # room, member, n; n keys and resume_after follow
# The largest HELLO frame's N (type + body: room, member, n, 255 verify keys, resume_after):
# no relay may cap frames below it.
MAX_HELLO_FRAME = 1 + _HELLO_HEAD.size + MAX_MEMBERS * VERIFY_KEY_LEN + 8
_WELCOME = struct.Struct(f">Q{STORE_ID_LEN}s")  # head, store_id


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


_DELIVER = int(FrameType.DELIVER)


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


# ERROR reasons a client may recognise by their exact text (and show as they are): the
# first four name a mistake the client can fix. Each comes with ERROR 3, bad handshake.
REASON_PRESENCE_PORT = "this is the presence port: connect to the relay port"  # a relay PROVE
REASON_RELAY_PORT = "this is the relay port: connect to the presence port"  # a presence PROVE
REASON_NOT_TLS = "this port does not speak TLS: connect without --tls"  # a ClientHello came
REASON_TLS_ONLY = "this port speaks only TLS: connect with --tls"  # plain bytes came
# The relay's handshake deadline passed (a slow path, or a client that stalled): not the
# client's mistake, and worth another try.
REASON_HANDSHAKE_TIMEOUT = "handshake did not finish in time"


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    body: bytes


def encode_frame(frame_type: int, body: bytes = b"") -> bytes:
    return _LEN.pack(len(body) + 1) + bytes((frame_type,)) + body


class FrameSplitter:
    """Cuts a byte stream into frames: the one splitter of the client and the relay.

    `feed` appends what was received to `buffer` and checks every length prefix that
    has arrived, the last one too even when its body has not: a bad one anywhere is a
    ProtocolError (ERROR 1 or 2) before any frame of the stream is handled, and a frame
    over the limit is refused from its prefix, before its body is buffered. It returns
    where the whole frames end: `buffer[:stop]` is `N (4) || type (1) || body (N - 1)`,
    again and again.

    The relay's hot path walks `buffer[:stop]` in place (no object per frame, a PUBLISH
    copied once); everyone else takes `Frame`s off the front (`pop`, `take`).
    """

    __slots__ = ("buffer", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.buffer = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> int:
        buf = self.buffer
        buf += data
        end = len(buf)
        max_frame = self.max_frame
        unpack_len = _LEN.unpack_from
        pos = 0
        while end - pos >= 4:
            (size,) = unpack_len(buf, pos)
            if size == 0:
                raise ProtocolError(ErrorCode.MALFORMED, "empty frame (length 0)")
            if size > max_frame:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"frame of {size} bytes exceeds the {max_frame} limit"
                )
            if end - pos - 4 < size:
                break
            pos += 4 + size
        return pos

    def pop(self) -> Frame | None:
        """The first whole frame, taken off the buffer (None: not all here yet). Call
        after `feed`, which checked its length."""
        buf = self.buffer
        if len(buf) < 4:
            return None
        end = 4 + _LEN.unpack_from(buf, 0)[0]
        if len(buf) < end:
            return None
        frame = Frame(buf[4], bytes(buf[5:end]))
        del buf[:end]
        return frame

    def take(self, stop: int) -> list[Frame]:
        """Every frame of `buffer[:stop]` (what `feed` returned), taken off the buffer."""
        buf = self.buffer
        frames: list[Frame] = []
        pos = 0
        while pos < stop:
            end = pos + 4 + _LEN.unpack_from(buf, pos)[0]
            frames.append(Frame(buf[pos + 4], bytes(buf[pos + 5 : end])))
            pos = end
        del buf[:stop]
        return frames

    @property
    def buffered(self) -> int:
        return len(self.buffer)


class FrameDecoder:
    """Turns a byte stream into frames (a `FrameSplitter` that hands them all out).
    Raises ProtocolError on a bad length prefix."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.splitter = FrameSplitter(max_frame)

    @property
    def max_frame(self) -> int:
        return self.splitter.max_frame

    def feed(self, data: bytes) -> list[Frame]:
        splitter = self.splitter
        return splitter.take(splitter.feed(data))

    @property
    def buffered(self) -> int:
        return self.splitter.buffered


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
        if not MIN_MEMBERS <= n <= MAX_MEMBERS or member >= n:
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


def deliver_head(seq: int, sealed_len: int) -> bytes:
    """The first `DELIVER_HEAD_LEN` bytes of the DELIVER frame of `seq`, whose sealed
    message of `sealed_len` bytes follows (the relay joins them without a copy)."""
    return _DELIVER_HEAD.pack(sealed_len + _DELIVER_BODY_HEAD, _DELIVER, seq)


def encode_deliver(seq: int, sealed: bytes) -> bytes:
    return deliver_head(seq, len(sealed)) + sealed


def deliver_seq(frame: bytes | bytearray | memoryview, at: int = 0) -> int:
    """The seq of the DELIVER frame at `at` (whose type the caller knows)."""
    return int(_DELIVER_HEAD.unpack_from(frame, at)[2])


def decode_deliver(body: bytes) -> tuple[int, bytes]:
    if len(body) < 8:
        raise ProtocolError(ErrorCode.MALFORMED, "DELIVER is too short")
    return int(_U64.unpack_from(body, 0)[0]), body[8:]


# encode_accepted(seq, counter), a C-level call: the relay makes one per message.
encode_accepted = functools.partial(_ACCEPTED.pack, _ACCEPTED.size - 4, int(FrameType.ACCEPTED))


def decode_accepted(body: bytes) -> tuple[int, int]:
    if len(body) != _SEQ_COUNTER.size:
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
