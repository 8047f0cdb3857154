"""A second implementation of format-2 kits and suite 2, for tests only.

Written from the specification alone (docs/PROTOCOL.md), not from GhostLine's
code: it imports nothing from `ghostline`, only the
standard library and `cryptography`'s Poly1305. tests/test_vectors_v2.py checks that it
and the project agree on every vector, byte for byte, both ways.

Where the specification leaves a choice, the choice is written down here:

- Reject rule names and their order are section 6's, with section 14's extents and
  any-sender overlap checks in place of format 1's slice and same-sender ones.
  The specification names no rule for a version-1 message reaching a format-2 kit: it is
  `unknown_version` here (the project calls it `format_mismatch`).
- Padding (section 13) is read strictly: L is a multiple of length_step and z is
  the least such, so after the tag verifies the
  padded plaintext must be exactly payload || 0x80 || 0x00 * z with 0 <= z < step.
- Grant checks (section 15) are numbered 1-6 in the order section 15 lists them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

HEADER = struct.Struct(">BB16sHHQQI")  # section 4, shared by suite 2


class Damaged(Exception):
    """section 11: the checksum does not match."""


class Malformed(Exception):
    """Anything else wrong with a kit file."""


@dataclass
class Kit:
    raw: bytearray
    header: dict
    base: int
    n: int
    e: int  # slice_len
    k: int  # auth_keys
    me: int
    step: int

    @property
    def pad_len(self) -> int:
        return self.n * self.e

    @property
    def pair_len(self) -> int:
        return 16 + 16 * self.k  # section 12: R, then K masks

    def _slot(self, other: int) -> int:
        return other if other < self.me else other - 1

    def outbound(self, r: int) -> int:
        return self.base + self.pad_len + self._slot(r) * self.pair_len

    def inbound(self, s: int) -> int:
        return self.base + self.pad_len + (self.n - 1 + self._slot(s)) * self.pair_len

    @property
    def journal(self) -> int:
        return self.base + self.pad_len + 2 * (self.n - 1) * self.pair_len

    def pad(self, offset: int, length: int) -> bytes:
        return bytes(self.raw[self.base + offset : self.base + offset + length])

    def key(self, region: int, j: int) -> bytes:
        """R || S_j of the pair region at `region`."""
        r = bytes(self.raw[region : region + 16])
        s = bytes(self.raw[region + 16 + 16 * j : region + 32 + 16 * j])
        return r + s


def parse_kit(raw: bytes) -> Kit:
    """sections 11-12. Raises Damaged for a bad checksum, checked before any field."""
    if len(raw) < 12 or raw[:8] != b"GHSTKIT2":
        raise Malformed("not a format-2 kit")
    (h,) = struct.unpack(">I", raw[8:12])
    if len(raw) < 44 + h:
        raise Malformed("truncated")
    if hashlib.sha256(raw[: 12 + h]).digest() != raw[12 + h : 44 + h]:
        raise Damaged("checksum")
    header = json.loads(raw[12 : 12 + h].decode("utf-8"))
    if header["format"] != 2 or header["suite"] != "ghostline-otp-poly1305-v2":
        raise Malformed("format")
    step = header["length_step"]
    if not (isinstance(step, int) and 1 <= step <= 4096):
        raise Malformed("length_step")
    base = -(-(44 + h) // 4096) * 4096
    n = len(header["members"])
    kit = Kit(bytearray(raw), header, base, n, header["slice_len"], header["auth_keys"],
              header["self"], step)  # fmt: skip
    if len(raw) != base + n * kit.e + 2 * (n - 1) * kit.pair_len + 4096:
        raise Malformed("length")
    return kit


def pad_payload(payload: bytes, step: int) -> bytes:
    z = -(len(payload) + 1) % step  # section 13: the least z >= 0
    return payload + b"\x80" + bytes(z)


def seal(kit: Kit, counter: int, offset: int, payload: bytes) -> bytes:
    """section 13: header || padded XOR grouppad || one tag per recipient."""
    padded = pad_payload(payload, kit.step)
    header = HEADER.pack(2, 2, bytes.fromhex(kit.header["pad_id"]), kit.me, kit.n, counter,
                         offset, len(padded))  # fmt: skip
    stream = kit.pad(offset, len(padded))
    out = header + bytes(a ^ b for a, b in zip(padded, stream, strict=True))
    for r in range(kit.n):
        if r != kit.me:
            out += Poly1305.generate_tag(kit.key(kit.outbound(r), counter), header + padded)
    return out


@dataclass
class State:
    """What a receiver knows: every member's extents as sorted [start, end) lists, and
    accepted messages (sender, counter, start, end)."""

    extents: list[list[tuple[int, int]]]
    accepted: list[tuple[int, int, int, int]] = field(default_factory=list)

    @classmethod
    def initial(cls, n: int, e: int) -> State:
        return cls([[(s * e, (s + 1) * e)] for s in range(n)])

    def holds(self, member: int, start: int, end: int) -> bool:
        return any(a <= start and end <= b for a, b in self.extents[member])

    def overlaps(self, start: int, end: int) -> bool:
        return any(a < end and start < b for _, _, a, b in self.accepted)

    def move(self, giver: int, to: int, start: int, end: int) -> None:
        """section 15: the range leaves the giver's extents for `to`'s."""
        out = []
        for a, b in self.extents[giver]:
            if a <= start and end <= b:
                out += [(x, y) for x, y in ((a, start), (end, b)) if x < y]
            else:
                out.append((a, b))
        self.extents[giver] = out
        merged: list[tuple[int, int]] = []
        for a, b in sorted([*self.extents[to], (start, end)]):
            if merged and merged[-1][1] == a:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        self.extents[to] = merged


def open_message(kit: Kit, data: bytes, state: State) -> tuple[str, bytes | None]:
    """("ok", payload) or (rule, None). Changes nothing."""
    if len(data) < 42:
        return "too_short", None
    version, suite, pad_id, sender, n, j, offset, length = HEADER.unpack_from(data)
    if version != 2:
        return "unknown_version", None
    if suite != 2:
        return "unknown_suite", None
    if pad_id.hex() != kit.header["pad_id"]:
        return "wrong_pad", None
    if n != kit.n:
        return "wrong_group_size", None
    if sender >= n:
        return "unknown_sender", None
    if sender == kit.me:
        return "own_message", None
    if len(data) != 42 + length + 16 * (n - 1):
        return "bad_length", None
    if length == 0:
        return "empty", None
    if j >= kit.k:
        return "counter_out_of_range", None
    if offset + length > kit.pad_len or not state.holds(sender, offset, offset + length):
        return "offset_out_of_range", None
    if any(s == sender and c == j for s, c, _, _ in state.accepted):
        return "replayed_counter", None
    if state.overlaps(offset, offset + length):
        return "overlapping_range", None
    key = kit.key(kit.inbound(sender), j)
    if key[:16] == bytes(16) or key[16:] == bytes(16):
        return "erased_key", None
    stream = kit.pad(offset, length)
    padded = bytes(a ^ b for a, b in zip(data[42 : 42 + length], stream, strict=True))
    index = kit.me if kit.me < sender else kit.me - 1
    tag = data[42 + length + 16 * index : 42 + length + 16 * index + 16]
    try:
        Poly1305.verify_tag(key, data[:42] + padded, tag)
    except InvalidSignature:
        return "bad_tag", None
    body = padded.rstrip(b"\x00")
    zeros = len(padded) - len(body)
    if length % kit.step or zeros >= kit.step or not body or body[-1] != 0x80:
        return "bad_padding", None
    return "ok", body[:-1]


def grant_of(payload: bytes) -> tuple[int, int, int] | None:
    """(to, start, end) of a kind-0x10 payload, or None for another kind."""
    if len(payload) != 5 + 18 or payload[0] != 0x10:
        return None
    return struct.unpack(">HQQ", payload[5:])


def check_grant(
    state: State, sender: int, n: int, message: tuple[int, int], grant: tuple[int, int, int]
) -> int:
    """0 when a receiver accepts the grant, else the number (1-6) of the first condition
    of section 15 that fails."""
    to, start, end = grant
    conditions = [
        to != sender,
        to < n,
        start < end,
        state.holds(sender, start, end),
        not (start < message[1] and message[0] < end),
        not state.overlaps(start, end),
    ]
    for number, holds in enumerate(conditions, 1):
        if not holds:
            return number
    return 0
