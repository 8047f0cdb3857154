"""Sealing and opening suite-1 messages (docs/PROTOCOL.md sections 4-6), for format-1
kits. Pure: no clock, no disk. Suite 2 (format-2 kits) is seal2.py, which shares
what is defined here for both: `Opened`, `check_addressing`, `tag_index` and the
rejections both suites word alike; both name the rules they check after
`protocol.rules.Rule`.

`seal` turns a plaintext into sealed bytes given the key stream and MAC keys;
`open_sealed` checks every reject rule of section 6 in order and returns the
plaintext, or raises `RejectedMessage` naming the rule. Neither changes any state:
recording what was consumed is `member.py`'s job, after these return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

from ..errors import ErasedKeyError, PadExhaustedError, RejectedMessage
from ..protocol.envelope import (
    HEADER_LEN,
    SUITE,
    SUITE_2,
    TAG_LEN,
    VERSION,
    VERSION_2,
    Envelope,
    pack_header,
    sealed_length,
    unpack_header,
)
from ..protocol.kitformat import FORMAT_1, KitHeader
from ..protocol.rules import Rule
from .kit import Kit

# Below this size Python's big integers XOR faster than a round trip through numpy
# (both suites).
NUMPY_XOR_FROM = 2048


def format_mismatch(kit_format: int) -> RejectedMessage:
    """The rejection of a complete message of the other format: a version 2, suite 2
    message for a format-1 kit, or a version 1, suite 1 message for a format-2 kit."""
    other = 3 - kit_format
    return RejectedMessage(
        Rule.FORMAT_MISMATCH,
        f"message is sealed for format-{other} kits (version {other}, suite {other}); "
        f"this kit is format {kit_format}",
    )


_U8 = np.uint8
_generate_tag = Poly1305.generate_tag
_verify_tag = Poly1305.verify_tag


# What both suites raise alike: one sentence each, so the two cannot drift apart.


def keys_used_up(header: KitHeader) -> PadExhaustedError:
    """Sealing: the kit's one-time keys (format 2: masks) are all used."""
    return PadExhaustedError(
        f"no one-time keys left: all {header.auth_keys} messages of this kit are used"
    )


def too_short(size: int) -> RejectedMessage:
    return RejectedMessage(
        Rule.TOO_SHORT, f"message is {size} bytes, shorter than the {HEADER_LEN}-byte header"
    )


def replayed(sender: int, counter: int) -> RejectedMessage:
    return RejectedMessage(
        Rule.REPLAYED_COUNTER,
        f"message {counter} from member {sender} was already accepted (replay)",
    )


def overlapping() -> RejectedMessage:
    return RejectedMessage(
        Rule.OVERLAPPING_RANGE, "message reuses pad bytes of an accepted message"
    )


def xor_bytes(a: bytes | memoryview, b: bytes | memoryview) -> bytes:
    """a XOR b, for equal lengths."""
    size = len(a)
    if size != len(b):
        raise ValueError("xor_bytes needs equal lengths")
    if size < NUMPY_XOR_FROM:
        return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(size, "little")
    return np.bitwise_xor(np.frombuffer(a, dtype=_U8), np.frombuffer(b, dtype=_U8)).tobytes()


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
    size = len(plaintext)
    if not size:
        raise ValueError("a sealed message carries at least one byte")
    if len(key_stream) != size:
        raise ValueError("the key stream must be as long as the plaintext")
    if len(mac_keys) != n - 1:
        raise ValueError(f"a group of {n} needs {n - 1} MAC keys, got {len(mac_keys)}")
    return _seal(pad_id, sender, n, counter, offset, plaintext, key_stream, mac_keys)


def _seal(
    pad_id: bytes,
    sender: int,
    n: int,
    counter: int,
    offset: int,
    plaintext: bytes,
    key_stream: bytes,
    mac_keys: Sequence[bytes],
) -> bytes:
    size = len(plaintext)
    header = pack_header(pad_id, sender, n, counter, offset, size)
    if size < NUMPY_XOR_FROM:
        # The common case (a chat line): every call here costs a visible share of the
        # few microseconds outside Poly1305, so the XOR is inlined and tags appended.
        ciphertext = int.from_bytes(plaintext, "little") ^ int.from_bytes(key_stream, "little")
        authenticated = header + ciphertext.to_bytes(size, "little")
        sealed = authenticated
        for key in mac_keys:
            sealed += _generate_tag(key, authenticated)
        return sealed
    # Large messages: XOR straight into an uninitialised array behind the header, MAC it
    # in place, and copy it once into the returned bytes.
    covered = np.empty(HEADER_LEN + size, dtype=_U8)
    covered[:HEADER_LEN] = np.frombuffer(header, dtype=_U8)
    np.bitwise_xor(
        np.frombuffer(plaintext, dtype=_U8),
        np.frombuffer(key_stream, dtype=_U8),
        out=covered[HEADER_LEN:],
    )
    view = covered.data
    tags = b"".join([_generate_tag(key, view) for key in mac_keys])
    return b"".join((view, tags))


def seal_with_kit(kit: Kit, counter: int, offset: int, plaintext: bytes) -> bytes:
    """Seal `plaintext` as message `counter` at `offset` of the kit owner's slice.

    Raises PadExhaustedError when the counter or the slice runs out and ErasedKeyError
    when a key reads as erased; in both cases nothing is consumed.
    """
    size = len(plaintext)
    if not size:
        raise ValueError("a sealed message carries at least one byte")
    if counter < 0 or offset < 0:
        raise ValueError("counter and offset cannot be negative")
    header = kit.header
    if header.format != FORMAT_1:
        raise ValueError("suite 1 seals with format-1 kits only (seal2 is for format 2)")
    if counter >= header.auth_keys:
        raise keys_used_up(header)
    if offset + size > header.slice_len:
        left = header.slice_len - offset
        raise PadExhaustedError(
            f"not enough pad left: this message needs {size} bytes, {left} remain in your slice"
        )
    me = header.self_index
    return _seal(
        header.pad_id,
        me,
        header.n,
        counter,
        offset,
        plaintext,
        kit.key_stream(me, offset, size),
        kit.outbound_keys(counter),
    )


class AcceptedLog(Protocol):
    """What the receiver has already accepted, per sender (a read-only view)."""

    def has_counter(self, sender: int, counter: int) -> bool: ...

    def overlaps(self, sender: int, start: int, end: int) -> bool: ...


class Opened(NamedTuple):
    envelope: Envelope
    plaintext: bytes


def tag_index(sender: int, recipient: int) -> int:
    """Position of recipient's tag among a message's tags (recipients skip sender)."""
    return recipient if recipient < sender else recipient - 1


def check_addressing(
    header: KitHeader,
    size: int,
    pad_id: bytes,
    sender: int,
    n: int,
    counter: int,
    length: int,
    *,
    per_message: str,
) -> None:
    """The reject rules both suites check alike, in this order, after version and suite
    (docs/PROTOCOL.md sections 6 and 14): pad, group size, sender, own message, total
    length (`size`), empty ciphertext, counter. `per_message` names what a counter
    indexes in the kit ("keys" or "masks")."""
    if pad_id != header.pad_id:
        raise RejectedMessage(Rule.WRONG_PAD, "message is for another pad (pad_id differs)")
    if n != header.n:
        raise RejectedMessage(
            Rule.WRONG_GROUP_SIZE, f"message names a group of {n}, this kit has {header.n}"
        )
    if sender >= n:
        raise RejectedMessage(Rule.UNKNOWN_SENDER, f"sender {sender} is not a member")
    if sender == header.self_index:
        raise RejectedMessage(Rule.OWN_MESSAGE, "message claims to be from this kit's owner")
    implied = sealed_length(length, n)
    if size != implied:
        raise RejectedMessage(
            Rule.BAD_LENGTH, f"message is {size} bytes, its header implies {implied}"
        )
    if length == 0:
        raise RejectedMessage(Rule.EMPTY, "message has an empty ciphertext")
    if counter >= header.auth_keys:
        raise RejectedMessage(
            Rule.COUNTER_OUT_OF_RANGE, f"counter {counter} is past the kit's {per_message}"
        )


def open_sealed(
    kit: Kit, data: bytes, accepted: AcceptedLog, *, envelope: Envelope | None = None
) -> Opened:
    """Check `data` against every reject rule, in the order of section 6, and decrypt.
    `envelope`: its header, when the caller has read it already (it is not read again).

    Changes no state. The caller records (sender, counter) and the range durably and
    erases the used key and pad bytes before showing the message.
    """
    header = kit.header
    if header.format != FORMAT_1:
        raise ValueError("suite 1 opens with format-1 kits only (seal2 is for format 2)")
    if len(data) < HEADER_LEN:
        raise too_short(len(data))
    fields = unpack_header(data) if envelope is None else envelope
    version, suite, pad_id, sender, n, counter, offset, length = fields
    if version == VERSION_2 and suite == SUITE_2:
        raise format_mismatch(FORMAT_1)
    if version != VERSION:
        raise RejectedMessage(Rule.UNKNOWN_VERSION, f"unknown version {version}")
    if suite != SUITE:
        raise RejectedMessage(Rule.UNKNOWN_SUITE, f"unknown suite {suite}")
    check_addressing(header, len(data), pad_id, sender, n, counter, length, per_message="keys")
    me = header.self_index
    end = HEADER_LEN + length
    if offset + length > header.slice_len:
        raise RejectedMessage(
            Rule.OFFSET_OUT_OF_RANGE, "message's pad range runs past the sender's slice"
        )
    if accepted.has_counter(sender, counter):
        raise replayed(sender, counter)
    if accepted.overlaps(sender, offset, offset + length):
        raise overlapping()
    try:
        key = kit.inbound_key(sender, counter)
    except ErasedKeyError:
        raise RejectedMessage(Rule.ERASED_KEY, "the key for this message is erased") from None
    tag_at = end + TAG_LEN * tag_index(sender, me)
    # Small messages: slicing bytes is cheaper than a memoryview; large: avoid copies.
    view = data if end < NUMPY_XOR_FROM else memoryview(data)
    try:
        _verify_tag(key, view[:end], bytes(view[tag_at : tag_at + TAG_LEN]))
    except InvalidSignature:
        raise RejectedMessage(
            Rule.BAD_TAG, "authentication tag does not verify: forged or damaged"
        ) from None
    plaintext = xor_bytes(view[HEADER_LEN:end], kit.key_stream(sender, offset, length))
    return Opened(envelope or Envelope(*fields), plaintext)
