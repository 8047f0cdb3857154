"""Sealing and opening suite-2 messages (docs/PROTOCOL.md sections 13-14), for format-2
kits. Pure: no clock, no disk; what the receiver knows comes in as a `ReceiverView`.

Suite 2 differs from suite 1 (seal.py) in four ways: the plaintext is padded to a
multiple of the kit's `length_step` (0x80, then zeros); the offset is absolute in the
group pad, and must lie in the sender's extents; each tag's one-time key is the pair's
hash key R followed by a fresh mask S_j; and the tags cover header || padded plaintext,
so the receiver decrypts first and then verifies, which makes a damaged pad byte on
either side fail the tag instead of changing the text.

Neither function changes any state. Recording what was consumed (and the per-pair count
of failed verifications, `Rule.BAD_TAG`) is the state layer's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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
    unpack_header,
)
from ..protocol.extents import Extents
from ..protocol.grants import GrantView
from ..protocol.kitformat import FORMAT_2
from ..protocol.rules import Rule
from .kit import Kit
from .seal import (
    NUMPY_XOR_FROM,
    Opened,
    check_addressing,
    format_mismatch,
    keys_used_up,
    overlapping,
    replayed,
    tag_index,
    too_short,
)

_U8 = np.uint8
_generate_tag = Poly1305.generate_tag
_verify_tag = Poly1305.verify_tag
_PAD_MARK = b"\x80"


def padded_length(payload_len: int, step: int) -> int:
    """L for a payload of `payload_len` bytes: the least multiple of `step` that holds
    the payload and the 0x80 marker."""
    return (payload_len // step + 1) * step


def largest_payload(max_padded: int, step: int) -> int:
    """The longest payload whose padded length is at most `max_padded` (the room a frame
    leaves for L); -1 when not even an empty payload fits."""
    return max_padded // step * step - 1


def pad_payload(payload: bytes, step: int) -> bytes:
    """payload || 0x80 || the fewest zeros that make the length a multiple of `step`."""
    return payload + _PAD_MARK + bytes(padded_length(len(payload), step) - len(payload) - 1)


def payload_length(padded: bytes | memoryview, step: int) -> int | None:
    """The payload's length inside `padded`, or None when `padded` is not exactly
    `pad_payload(payload, step)` for some payload: its length must be a multiple of
    `step`, and after its trailing zeros (fewer than `step` of them) comes one 0x80."""
    size = len(padded)
    if size == 0 or size % step:
        return None
    tail = bytes(padded[size - step :]).rstrip(b"\x00")  # the zeros all lie in the last step
    if not tail or tail[-1] != 0x80:
        return None
    return size - step + len(tail) - 1


def next_range(free: Extents, payload_len: int, step: int) -> tuple[int, int]:
    """Where the next message of `payload_len` bytes goes: the lowest `[offset, offset+L)`
    inside `free` (the sender's extents it has not sealed with). Raises
    PadExhaustedError when no free run is long enough; nothing is consumed."""
    size = padded_length(payload_len, step)
    offset = free.first_fit(size)
    if offset is None:
        raise PadExhaustedError(
            f"not enough pad left: this message needs {size} bytes in one piece, "
            f"the longest free piece of your pad is {free.largest()}"
        )
    return offset, offset + size


def seal2(
    *,
    pad_id: bytes,
    sender: int,
    n: int,
    counter: int,
    offset: int,
    payload: bytes,
    step: int,
    pad: bytes,
    tag_keys: Sequence[bytes],
) -> bytes:
    """Sealed bytes for `payload`, padded to a multiple of `step`. `pad` is the group pad
    at [offset, offset+L), L the padded length; `tag_keys[i]` is R || S_counter of the
    i-th recipient in increasing order (every r != sender)."""
    size = padded_length(len(payload), step)
    if len(pad) != size:
        raise ValueError(f"the pad must be {size} bytes, the padded payload's length")
    if len(tag_keys) != n - 1:
        raise ValueError(f"a group of {n} needs {n - 1} tag keys, got {len(tag_keys)}")
    return _seal2(pad_id, sender, n, counter, offset, payload, size, pad, tag_keys)


def _seal2(
    pad_id: bytes,
    sender: int,
    n: int,
    counter: int,
    offset: int,
    payload: bytes,
    size: int,
    pad: bytes,
    tag_keys: Sequence[bytes],
) -> bytes:
    header = pack_header(pad_id, sender, n, counter, offset, size, VERSION_2, SUITE_2)
    used = len(payload)
    if size < NUMPY_XOR_FROM:
        # The common case (a chat line): plain bytes and big-integer XOR.
        covered = header + payload + _PAD_MARK + bytes(size - used - 1)
        ciphertext = int.from_bytes(covered[HEADER_LEN:], "little") ^ int.from_bytes(pad, "little")
        sealed = header + ciphertext.to_bytes(size, "little")
        for key in tag_keys:
            sealed += _generate_tag(key, covered)
        return sealed
    # Large messages: XOR straight into an array behind the header, without building
    # the padded plaintext (the padding is 0x80 then zeros: pad bytes pass through),
    # and MAC header || payload || padding in pieces.
    out = np.empty(HEADER_LEN + size, dtype=_U8)
    out[:HEADER_LEN] = np.frombuffer(header, dtype=_U8)
    pad_arr = np.frombuffer(pad, dtype=_U8)
    body = out[HEADER_LEN:]
    np.bitwise_xor(np.frombuffer(payload, dtype=_U8), pad_arr[:used], out=body[:used])
    body[used] = pad_arr[used] ^ 0x80
    body[used + 1 :] = pad_arr[used + 1 :]
    padding = _PAD_MARK + bytes(size - used - 1)
    tags = []
    for key in tag_keys:
        mac = Poly1305(key)
        mac.update(header)
        mac.update(payload)
        mac.update(padding)
        tags.append(mac.finalize())
    return b"".join((out.data, *tags))


def seal_with_kit2(kit: Kit, counter: int, offset: int, payload: bytes, *, free: Extents) -> bytes:
    """Seal `payload` as message `counter` at absolute `offset` of the group pad.

    `free` is the owner's extents that it has not sealed with (see `next_range`); the
    message's range must lie inside it (ValueError otherwise: the caller chose it).
    Raises PadExhaustedError when the masks run out and ErasedKeyError when a hash key
    or mask reads as erased; in both cases nothing is consumed.
    """
    header = kit.header
    if header.format != FORMAT_2:
        raise ValueError("suite 2 seals with format-2 kits only (seal is for format 1)")
    if counter < 0 or offset < 0:
        raise ValueError("counter and offset cannot be negative")
    step = header.length_step
    assert step is not None  # every format-2 header has one
    size = padded_length(len(payload), step)
    if not free.contains(offset, offset + size):
        raise ValueError(f"[{offset}, {offset + size}) is not free in the sender's extents")
    if counter >= header.auth_keys:
        raise keys_used_up(header)
    return _seal2(
        header.pad_id,
        header.self_index,
        header.n,
        counter,
        offset,
        payload,
        size,
        kit.pad_bytes(offset, size),
        kit.outbound_tag_keys(counter),
    )


class ReceiverView(GrantView, Protocol):
    """What a receiver knows when it opens a suite-2 message (read-only): `holds` and
    `overlaps_accepted` (see GrantView), and which counters it accepted per sender."""

    def has_counter(self, sender: int, counter: int) -> bool: ...


def open_sealed2(kit: Kit, data: bytes, state: ReceiverView) -> Opened:
    """Check `data` against every reject rule, in the order of section 14, decrypt,
    verify, and return the payload (padding removed). The envelope's `length` is the
    padded length L: the range [offset, offset+L) that the message consumed.

    Changes no state. The caller records (sender, counter) and the range durably and
    erases the used mask and pad bytes before showing the message.
    """
    header = kit.header
    step = header.length_step
    if header.format != FORMAT_2 or step is None:
        raise ValueError("suite 2 opens with format-2 kits only (seal is for format 1)")
    if len(data) < HEADER_LEN:
        raise too_short(len(data))
    version, suite, pad_id, sender, n, counter, offset, length = unpack_header(data)
    if version != VERSION_2:
        if version == VERSION and suite == SUITE:
            raise format_mismatch(FORMAT_2)
        raise RejectedMessage(Rule.UNKNOWN_VERSION, f"unknown version {version}")
    if suite != SUITE_2:
        raise RejectedMessage(Rule.UNKNOWN_SUITE, f"unknown suite {suite}")
    check_addressing(header, len(data), pad_id, sender, n, counter, length, per_message="masks")
    me = header.self_index
    end = HEADER_LEN + length
    stop = offset + length
    if stop > n * header.slice_len or not state.holds(sender, offset, stop):
        raise RejectedMessage(
            Rule.OFFSET_OUT_OF_RANGE,
            f"message's pad range [{offset}, {stop}) is not member {sender}'s to use",
        )
    if state.has_counter(sender, counter):
        raise replayed(sender, counter)
    if state.overlaps_accepted(offset, stop):
        raise overlapping()
    try:
        key = kit.inbound_tag_key(sender, counter)
    except ErasedKeyError:
        raise RejectedMessage(Rule.ERASED_KEY, "the mask for this message is erased") from None
    tag_at = end + TAG_LEN * tag_index(sender, me)
    tag = data[tag_at : tag_at + TAG_LEN]
    pad = kit.pad_bytes(offset, length)
    if length < NUMPY_XOR_FROM:
        padded = (
            int.from_bytes(data[HEADER_LEN:end], "little") ^ int.from_bytes(pad, "little")
        ).to_bytes(length, "little")
        try:
            _verify_tag(key, data[:HEADER_LEN] + padded, tag)
        except InvalidSignature:
            raise _bad_tag() from None
        used = payload_length(padded, step)
        if used is None:
            raise _bad_padding(step)
        plaintext = padded[:used]
    else:
        covered = np.empty(end, dtype=_U8)
        covered[:HEADER_LEN] = np.frombuffer(data, dtype=_U8, count=HEADER_LEN)
        np.bitwise_xor(
            np.frombuffer(data, dtype=_U8, count=length, offset=HEADER_LEN),
            np.frombuffer(pad, dtype=_U8),
            out=covered[HEADER_LEN:],
        )
        view = covered.data
        try:
            _verify_tag(key, view, tag)
        except InvalidSignature:
            raise _bad_tag() from None
        used = payload_length(view[HEADER_LEN:], step)
        if used is None:
            raise _bad_padding(step)
        plaintext = bytes(view[HEADER_LEN : HEADER_LEN + used])
    env = Envelope(version, suite, pad_id, sender, n, counter, offset, length)
    return Opened(env, plaintext)


def _bad_tag() -> RejectedMessage:
    return RejectedMessage(
        Rule.BAD_TAG,
        "authentication tag does not verify: forged, or the sender's or this kit is damaged",
    )


def _bad_padding(step: int) -> RejectedMessage:
    return RejectedMessage(
        Rule.BAD_PADDING,
        f"the tag verifies but the padding is malformed (length step {step}): the "
        "sender's software is faulty",
    )
