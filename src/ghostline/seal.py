"""Sealing and opening messages (protocol-v1 sections 4-6). Pure: no clock, no disk.

`seal` turns a plaintext into sealed bytes given the key stream and MAC keys;
`open_sealed` checks every reject rule of section 6 in order and returns the
plaintext, or raises `RejectedMessage` naming the rule. Neither changes any state:
recording what was consumed is `member.py`'s job, after these return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

from .envelope import (
    HEADER_LEN,
    SUITE,
    TAG_LEN,
    VERSION,
    Envelope,
    read_envelope,
    sealed_length,
)
from .errors import ErasedKeyError, PadExhaustedError, RejectedMessage
from .kit import Kit

# Below this size Python's big integers XOR faster than a round trip through numpy.
_NUMPY_XOR_FROM = 2048


class Rule:
    """Stable names of the reject rules of protocol-v1 section 6, in checking order."""

    TOO_SHORT = "too_short"
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_SUITE = "unknown_suite"
    WRONG_PAD = "wrong_pad"
    WRONG_GROUP_SIZE = "wrong_group_size"
    UNKNOWN_SENDER = "unknown_sender"
    OWN_MESSAGE = "own_message"
    BAD_LENGTH = "bad_length"
    EMPTY = "empty"
    COUNTER_OUT_OF_RANGE = "counter_out_of_range"
    OFFSET_OUT_OF_RANGE = "offset_out_of_range"
    REPLAYED_COUNTER = "replayed_counter"
    OVERLAPPING_RANGE = "overlapping_range"
    ERASED_KEY = "erased_key"
    BAD_TAG = "bad_tag"

    ALL = (
        TOO_SHORT,
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


def xor_bytes(a: bytes | memoryview, b: bytes | memoryview) -> bytes:
    """a XOR b, for equal lengths."""
    if len(a) != len(b):
        raise ValueError("xor_bytes needs equal lengths")
    if len(a) < _NUMPY_XOR_FROM:
        size = len(a)
        return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(size, "little")
    return np.bitwise_xor(
        np.frombuffer(a, dtype=np.uint8), np.frombuffer(b, dtype=np.uint8)
    ).tobytes()


def seal(
    *,
    pad_id: bytes,
    sender: int,
    n: int,
    counter: int,
    offset: int,
    plaintext: bytes,
    key_stream: bytes,
    mac_keys: Sequence[bytes],
) -> bytes:
    """Sealed bytes for `plaintext`. `mac_keys[i]` is the key for the i-th recipient
    in increasing order (every r != sender); `key_stream` is exactly len(plaintext)."""
    if not plaintext:
        raise ValueError("a sealed message carries at least one byte")
    if len(key_stream) != len(plaintext):
        raise ValueError("the key stream must be as long as the plaintext")
    if len(mac_keys) != n - 1:
        raise ValueError(f"a group of {n} needs {n - 1} MAC keys, got {len(mac_keys)}")
    header = Envelope(VERSION, SUITE, pad_id, sender, n, counter, offset, len(plaintext)).pack()
    authenticated = header + xor_bytes(plaintext, key_stream)
    tags = b"".join(Poly1305.generate_tag(key, authenticated) for key in mac_keys)
    return authenticated + tags


def seal_with_kit(kit: Kit, counter: int, offset: int, plaintext: bytes) -> bytes:
    """Seal `plaintext` as message `counter` at `offset` of the kit owner's slice.

    Raises PadExhaustedError when the counter or the slice runs out and ErasedKeyError
    when a key reads as erased; in both cases nothing is consumed.
    """
    header = kit.header
    if counter >= header.auth_keys:
        raise PadExhaustedError(
            f"no one-time keys left: all {header.auth_keys} messages of this kit are used"
        )
    if offset + len(plaintext) > header.slice_len:
        left = header.slice_len - offset
        raise PadExhaustedError(
            f"not enough pad left: this message needs {len(plaintext)} bytes, "
            f"{left} remain in your slice"
        )
    me = kit.self_index
    mac_keys = [kit.outbound_key(r, counter) for r in kit.layout.others()]
    return seal(
        pad_id=kit.pad_id,
        sender=me,
        n=kit.n,
        counter=counter,
        offset=offset,
        plaintext=plaintext,
        key_stream=kit.key_stream(me, offset, len(plaintext)),
        mac_keys=mac_keys,
    )


class AcceptedLog(Protocol):
    """What the receiver has already accepted, per sender (a read-only view)."""

    def has_counter(self, sender: int, counter: int) -> bool: ...

    def overlaps(self, sender: int, start: int, end: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class Opened:
    envelope: Envelope
    plaintext: bytes


def tag_index(sender: int, recipient: int) -> int:
    """Position of recipient's tag among a message's tags (recipients skip sender)."""
    return recipient if recipient < sender else recipient - 1


def open_sealed(kit: Kit, data: bytes, accepted: AcceptedLog) -> Opened:
    """Check `data` against every reject rule, in the order of section 6, and decrypt.

    Changes no state. The caller records (sender, counter) and the range durably and
    erases the used key and pad bytes before showing the message.
    """
    if len(data) < HEADER_LEN:
        raise RejectedMessage(
            Rule.TOO_SHORT, f"message is {len(data)} bytes, shorter than the 42-byte header"
        )
    env = read_envelope(data)
    header = kit.header
    if env.version != VERSION:
        raise RejectedMessage(Rule.UNKNOWN_VERSION, f"unknown version {env.version}")
    if env.suite != SUITE:
        raise RejectedMessage(Rule.UNKNOWN_SUITE, f"unknown suite {env.suite}")
    if env.pad_id != header.pad_id:
        raise RejectedMessage(Rule.WRONG_PAD, "message is for another pad (pad_id differs)")
    if env.n != header.n:
        raise RejectedMessage(
            Rule.WRONG_GROUP_SIZE, f"message names a group of {env.n}, this kit has {header.n}"
        )
    if env.sender >= header.n:
        raise RejectedMessage(Rule.UNKNOWN_SENDER, f"sender {env.sender} is not a member")
    if env.sender == header.self_index:
        raise RejectedMessage(Rule.OWN_MESSAGE, "message claims to be from this kit's owner")
    if len(data) != sealed_length(env.length, env.n):
        raise RejectedMessage(
            Rule.BAD_LENGTH,
            f"message is {len(data)} bytes, its header implies {sealed_length(env.length, env.n)}",
        )
    if env.length == 0:
        raise RejectedMessage(Rule.EMPTY, "message has an empty ciphertext")
    if env.counter >= header.auth_keys:
        raise RejectedMessage(
            Rule.COUNTER_OUT_OF_RANGE, f"counter {env.counter} is past the kit's keys"
        )
    if env.offset + env.length > header.slice_len:
        raise RejectedMessage(
            Rule.OFFSET_OUT_OF_RANGE, "message's pad range runs past the sender's slice"
        )
    if accepted.has_counter(env.sender, env.counter):
        raise RejectedMessage(
            Rule.REPLAYED_COUNTER,
            f"message {env.counter} from member {env.sender} was already accepted (replay)",
        )
    if accepted.overlaps(env.sender, env.offset, env.offset + env.length):
        raise RejectedMessage(
            Rule.OVERLAPPING_RANGE, "message reuses pad bytes of an accepted message"
        )
    try:
        key = kit.inbound_key(env.sender, env.counter)
    except ErasedKeyError:
        raise RejectedMessage(Rule.ERASED_KEY, "the key for this message is erased") from None
    tag_at = HEADER_LEN + env.length + TAG_LEN * tag_index(env.sender, header.self_index)
    authenticated = data[: HEADER_LEN + env.length]
    try:
        Poly1305.verify_tag(key, authenticated, data[tag_at : tag_at + TAG_LEN])
    except InvalidSignature:
        raise RejectedMessage(
            Rule.BAD_TAG, "authentication tag does not verify: forged or damaged"
        ) from None
    ciphertext = data[HEADER_LEN : HEADER_LEN + env.length]
    plaintext = xor_bytes(ciphertext, kit.key_stream(env.sender, env.offset, env.length))
    return Opened(env, plaintext)
