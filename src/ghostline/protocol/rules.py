"""What a receiver refuses, by stable name, each rule beside the fact it guards.

Two kinds (docs/PROTOCOL.md):

- `Rule`: the reject rules for opening a sealed message (sections 6 and 14). A
  recipient checks them in order; the names are shared by suite 1 and suite 2, the test
  vectors, `RejectedMessage.rule` and `listen --json`.
- `Refusal`s: what the relay refuses on the wire (section 8), each with the ERROR code
  it answers with and the reason it sends. The PUBLISH checks are here, next to their
  refusals; the handshake's are used by `handshake.py`. A frame's own layout (its
  length prefix, the length of a HELLO or WELCOME body) is checked by its codec in
  `frames.py`.

Pure: no I/O; the PUBLISH check reads the header in place, through `envelope.py`.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ProtocolError
from .envelope import HEADER_LEN, VERSION_SUITES, pack_identity, sealed_length, unpack_header
from .frames import REASON_PRESENCE_PORT, REASON_RELAY_PORT, ErrorCode


class Rule:
    """Stable names of the reject rules for opening (sections 6 and 14).

    `SUITE_1` and `SUITE_2` list the rules each opener checks, in checking order; a
    rule's name means the same thing in both.
    """

    TOO_SHORT = "too_short"  # fewer bytes than the 42-byte header
    FORMAT_MISMATCH = "format_mismatch"  # a whole message of the other kit format
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_SUITE = "unknown_suite"
    WRONG_PAD = "wrong_pad"  # pad_id is not this kit's
    WRONG_GROUP_SIZE = "wrong_group_size"  # n is not this kit's
    UNKNOWN_SENDER = "unknown_sender"  # sender >= n
    OWN_MESSAGE = "own_message"  # sender is the kit's owner
    BAD_LENGTH = "bad_length"  # not 42 + L + 16 (n - 1) bytes
    EMPTY = "empty"  # L = 0
    COUNTER_OUT_OF_RANGE = "counter_out_of_range"  # past the kit's keys (masks)
    OFFSET_OUT_OF_RANGE = "offset_out_of_range"  # past the sender's pad
    REPLAYED_COUNTER = "replayed_counter"  # (sender, counter) already accepted
    OVERLAPPING_RANGE = "overlapping_range"  # pad bytes of an accepted message
    ERASED_KEY = "erased_key"  # the key (mask) reads as erased
    BAD_TAG = "bad_tag"  # the tag does not verify
    BAD_PADDING = "bad_padding"  # suite 2: not 0x80 then zeros to the length step

    SUITE_1 = (
        TOO_SHORT,
        FORMAT_MISMATCH,
        UNKNOWN_VERSION,
        UNKNOWN_SUITE,
        WRONG_PAD,
        WRONG_GROUP_SIZE,
        UNKNOWN_SENDER,
        OWN_MESSAGE,
        BAD_LENGTH,
        EMPTY,
        COUNTER_OUT_OF_RANGE,
        OFFSET_OUT_OF_RANGE,
        REPLAYED_COUNTER,
        OVERLAPPING_RANGE,
        ERASED_KEY,
        BAD_TAG,
    )
    SUITE_2 = (*SUITE_1, BAD_PADDING)
    ALL = SUITE_2


class Refusal(NamedTuple):
    """A rule the relay enforces: its stable name, the ERROR code and the reason sent."""

    name: str
    code: ErrorCode
    reason: str

    def error(self) -> ProtocolError:
        return ProtocolError(self.code, self.reason, rule=self.name)


# --- PUBLISH (section 8, relay port): the relay reads the sealed header and nothing else.

# A PUBLISH must hold a whole header,
PUBLISH_TOO_SHORT = Refusal(
    "publish_too_short", ErrorCode.BAD_PUBLISH, "sealed message shorter than its header"
)
# of a (version, suite) that exists: (1, 1) or (2, 2),
PUBLISH_UNKNOWN_SUITE = Refusal(
    "publish_unknown_suite", ErrorCode.BAD_PUBLISH, "unknown version or suite"
)
# for this room,
PUBLISH_WRONG_ROOM = Refusal("publish_wrong_room", ErrorCode.BAD_PUBLISH, "pad_id is not this room")
# from the member this connection proved to be,
PUBLISH_WRONG_SENDER = Refusal(
    "publish_wrong_sender", ErrorCode.BAD_PUBLISH, "sender is not the authenticated member"
)
# in a group of the roster's size,
PUBLISH_WRONG_GROUP_SIZE = Refusal(
    "publish_wrong_group_size", ErrorCode.BAD_PUBLISH, "n differs from the room's roster"
)
# with L >= 1 and exactly 42 + L + 16 (n - 1) bytes.
PUBLISH_BAD_LENGTH = Refusal(
    "publish_bad_length", ErrorCode.BAD_PUBLISH, "length does not match the header"
)


def check_publish_at(
    data: bytes | bytearray, start: int, size: int, room: bytes, member: int, n: int
) -> int:
    """Check the sealed message in the `size` bytes at `start` of `data` (a PUBLISH
    body, read in place) against the rules above, in their order; returns its counter.
    Raises the first rule's ProtocolError."""
    if size < HEADER_LEN:
        raise PUBLISH_TOO_SHORT.error()
    version, suite, pad_id, sender, env_n, counter, _, length = unpack_header(data, start)
    if (version, suite) not in VERSION_SUITES:
        raise PUBLISH_UNKNOWN_SUITE.error()
    if pad_id != room:
        raise PUBLISH_WRONG_ROOM.error()
    if sender != member:
        raise PUBLISH_WRONG_SENDER.error()
    if env_n != n:
        raise PUBLISH_WRONG_GROUP_SIZE.error()
    if length == 0 or size != sealed_length(length, n):
        raise PUBLISH_BAD_LENGTH.error()
    return int(counter)


def publish_prefixes(room: bytes, member: int, n: int) -> tuple[bytes, ...]:
    """The header identities (version, suite, pad_id, sender, n) that pass the first
    five rules above for `member` in `room`, one per (version, suite): a PUBLISH that
    starts with one of them and has the right length passes them all (the relay's hot
    path compares them at once and leaves the rest to `check_publish_at`)."""
    return tuple(pack_identity(room, member, n, v, s) for v, s in VERSION_SUITES)


# --- the handshake (section 8, both ports): `handshake.RelayHandshake` enforces these.

# Every HELLO of a room carries the roster the room was registered with.
ROSTER_MISMATCH = Refusal(
    "roster_mismatch", ErrorCode.ROSTER_MISMATCH, "roster does not match the room's roster"
)
# PROVE is a 64-byte Ed25519 signature,
PROVE_BAD_LENGTH = Refusal(
    "prove_bad_length", ErrorCode.BAD_HANDSHAKE, "PROVE must be a 64-byte signature"
)
# by roster[member], over the join statement of this port and this connection's nonce.
BAD_SIGNATURE = Refusal("bad_signature", ErrorCode.BAD_SIGNATURE, "signature does not verify")
# A signature made for the other port names the port instead (a client pointed at the
# wrong one can tell its user).
PROVE_FOR_RELAY_PORT = Refusal(
    "prove_for_relay_port", ErrorCode.BAD_HANDSHAKE, REASON_PRESENCE_PORT
)  # came to the presence port
PROVE_FOR_PRESENCE_PORT = Refusal(
    "prove_for_presence_port", ErrorCode.BAD_HANDSHAKE, REASON_RELAY_PORT
)  # came to the relay port
