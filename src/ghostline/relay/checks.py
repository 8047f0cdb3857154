"""The relay's pure decisions: handshake proofs, PUBLISH headers, publish rate.

No I/O, no clock, no randomness: callers pass them in. Each check raises a
`ProtocolError` carrying the ERROR code the relay answers with.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import ProtocolError
from ..protocol.envelope import HEADER_LEN, SUITE, VERSION, sealed_length
from ..protocol.frames import (
    REASON_PRESENCE_PORT,
    REASON_RELAY_PORT,
    SIGNATURE_LEN,
    ErrorCode,
    Hello,
    Port,
    join_statement,
)
from .backend import Publish, Roster

_HEADER = struct.Struct(">BB16sHHQQI")  # envelope.py's header (protocol-v1 section 4)
_PREFIX = struct.Struct(">BB16sHH")  # its first five fields


def check_roster(hello: Hello, bound: Roster) -> None:
    """Later HELLOs must carry exactly the roster the room was registered with."""
    if hello.roster != bound:
        raise ProtocolError(ErrorCode.ROSTER_MISMATCH, "roster does not match the room's roster")


def verify_prove(port: Port, hello: Hello, nonce: bytes, signature: bytes) -> None:
    """PROVE must be an Ed25519 signature by roster[member] over the join statement.

    One made for the other port (a client pointed at the wrong one) is told so, rather
    than blamed on its key: it is a bad handshake with a reason naming the port.
    """
    if len(signature) != SIGNATURE_LEN:
        raise ProtocolError(ErrorCode.BAD_HANDSHAKE, "PROVE must be a 64-byte signature")
    try:
        key = Ed25519PublicKey.from_public_bytes(hello.roster[hello.member])
    except ValueError as err:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "signature does not verify") from err
    if _verifies(key, signature, join_statement(port, hello.room, hello.member, nonce)):
        return
    other = Port.PRESENCE if port == Port.RELAY else Port.RELAY
    if _verifies(key, signature, join_statement(other, hello.room, hello.member, nonce)):
        reason = REASON_PRESENCE_PORT if port == Port.PRESENCE else REASON_RELAY_PORT
        raise ProtocolError(ErrorCode.BAD_HANDSHAKE, reason)
    raise ProtocolError(ErrorCode.BAD_SIGNATURE, "signature does not verify")


def _verifies(key: Ed25519PublicKey, signature: bytes, statement: bytes) -> bool:
    try:
        key.verify(signature, statement)
    except InvalidSignature:
        return False
    return True


def check_publish(sealed: bytes, room: bytes, member: int, n: int) -> Publish:
    """The header of a PUBLISH must name this room, this member and this roster's n,
    and the message must be exactly as long as its header says. Nothing else is read."""
    return Publish(room, member, check_publish_at(sealed, 0, len(sealed), room, member, n), sealed)


def check_publish_at(
    data: bytes | bytearray, start: int, size: int, room: bytes, member: int, n: int
) -> int:
    """`check_publish` for the `size` bytes at `start` of `data`, without copying them
    (the relay's hot path reads the header in its receive buffer); returns the counter."""
    if size < HEADER_LEN:
        raise ProtocolError(ErrorCode.BAD_PUBLISH, "sealed message shorter than its header")
    version, suite, pad_id, sender, env_n, counter, _, length = _HEADER.unpack_from(data, start)
    if version != VERSION or suite != SUITE:
        raise ProtocolError(ErrorCode.BAD_PUBLISH, "unknown version or suite")
    if pad_id != room:
        raise ProtocolError(ErrorCode.BAD_PUBLISH, "pad_id is not this room")
    if sender != member:
        raise ProtocolError(ErrorCode.BAD_PUBLISH, "sender is not the authenticated member")
    if env_n != n:
        raise ProtocolError(ErrorCode.BAD_PUBLISH, "n differs from the room's roster")
    if length == 0 or size != sealed_length(length, n):
        raise ProtocolError(ErrorCode.BAD_PUBLISH, "length does not match the header")
    return int(counter)


def publish_prefix(room: bytes, member: int, n: int) -> bytes:
    """The first 22 header bytes (version, suite, pad_id, sender, n) that every PUBLISH of
    `member` in `room` must start with: the relay's hot path compares them at once."""
    return _PREFIX.pack(VERSION, SUITE, room, member, n)


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. `now` comes from the caller."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True
