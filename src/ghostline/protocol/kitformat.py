"""Kit file formats 1 and 2 (docs/PROTOCOL.md sections 2-3 and 11-12). Pure: no files.

Everything before the pad (magic, header, checksum) and where each region lies.
`kit.py` maps kit files and `kitset.py` writes them; both take their layout from here.

    format 1                                 format 2
    0     8  magic "GHSTKIT1"                0     8  magic "GHSTKIT2"
    8     4  H, header length                8     4  H
    12    H  header (UTF-8 JSON)             12    H  header (UTF-8 JSON)
    12+H  .. zeros up to base                12+H  32 SHA-256 of bytes [0, 12+H)
    base  .. group pad, outbound pair        44+H  .. zeros up to base
             regions, inbound pair regions   base  .. group pad, outbound and inbound
                                                      pair regions, grant journal (4096)

`base` is the first multiple of 4096 at or after the end of the header (format 1) or of
the checksum (format 2). A format-1 pair region is K MAC keys of 32 bytes; a format-2
pair region is the pair's 16-byte hash key R, then K masks of 16 bytes.

Every malformed prefix raises KitError (KitDamagedError when a format-2 checksum fails,
which is checked before any header field is used); nothing else escapes the parser.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import KitDamagedError, KitError
from .envelope import MAX_MEMBERS, MIN_MEMBERS, PAD_ID_LEN
from .frames import VERIFY_KEY_LEN

FORMAT_1 = 1
FORMAT_2 = 2
MAGICS = {FORMAT_1: b"GHSTKIT1", FORMAT_2: b"GHSTKIT2"}
SUITE_NAMES = {FORMAT_1: "ghostline-otp-poly1305-v1", FORMAT_2: "ghostline-otp-poly1305-v2"}
_FORMAT_OF_MAGIC = {magic: fmt for fmt, magic in MAGICS.items()}

KEY_LEN = 32  # format 1: one one-time Poly1305 key
HASH_KEY_LEN = 16  # format 2: a pair's hash key R (Poly1305's r half)
MASK_LEN = 16  # format 2: one mask S_j (Poly1305's s half)
CHECKSUM_LEN = 32
PAGE = 4096
JOURNAL_LEN = 4096  # format 2: the grant journal, last in the file
MIN_LENGTH_STEP = 1
MAX_LENGTH_STEP = 4096
DEFAULT_LENGTH_STEP = 32
# No real header comes near this (255 members take about 40 KB); a larger H is damage.
MAX_HEADER_LEN = 1 << 20

_PREFIX = struct.Struct(">8sI")
PREFIX_LEN = _PREFIX.size
_V1_KEYS = (
    "format",
    "suite",
    "pad_id",
    "group",
    "created",
    "members",
    "self",
    "signing_key",
    "slice_len",
    "auth_keys",
    "entropy",
)
HEADER_KEYS = {FORMAT_1: _V1_KEYS, FORMAT_2: (*_V1_KEYS, "length_step")}
_HEX = re.compile(r"\A[0-9a-f]*\Z")


@dataclass(frozen=True, slots=True)
class KitMember:
    name: str
    verify_key: bytes  # raw 32-byte Ed25519 public key


@dataclass(frozen=True, slots=True)
class KitHeader:
    """The JSON header of a kit, with hex fields decoded to bytes.

    `length_step` is None for format 1 (which does not pad) and 1..4096 for format 2.
    """

    pad_id: bytes
    group: str
    created: str
    members: tuple[KitMember, ...]
    self_index: int
    signing_key: bytes  # raw 32-byte Ed25519 seed
    slice_len: int
    auth_keys: int
    entropy: str
    format: int = FORMAT_1
    length_step: int | None = None

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def self_name(self) -> str:
        return self.members[self.self_index].name

    @property
    def pad_len(self) -> int:
        """The whole group pad, n * E bytes."""
        return self.n * self.slice_len

    def to_json_bytes(self) -> bytes:
        """Serialise in the key order of docs/PROTOCOL.md (section 2, and 11 for the
        trailing `length_step` of format 2), compact, UTF-8."""
        obj: dict[str, Any] = {
            "format": self.format,
            "suite": SUITE_NAMES[self.format],
            "pad_id": self.pad_id.hex(),
            "group": self.group,
            "created": self.created,
            "members": [{"name": m.name, "verify_key": m.verify_key.hex()} for m in self.members],
            "self": self.self_index,
            "signing_key": self.signing_key.hex(),
            "slice_len": self.slice_len,
            "auth_keys": self.auth_keys,
            "entropy": self.entropy,
        }
        if self.format == FORMAT_2:
            obj["length_step"] = self.length_step
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json_bytes(
        cls, raw: bytes, *, where: str = "kit", format: int = FORMAT_1
    ) -> KitHeader:
        """Parse and range-check a header of the given format (known from the magic)."""
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError and integers past Python's digit limit;
            # RecursionError, arrays nested thousands deep.
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise KitError(f"{where}: the header is not valid UTF-8 JSON ({reason})") from None
        if not isinstance(obj, dict):
            raise KitError(f"{where}: the header is not a JSON object")
        missing = [k for k in HEADER_KEYS[format] if k not in obj]
        if missing:
            raise KitError(f"{where}: the header lacks {', '.join(missing)}")
        if type(obj["format"]) is not int or obj["format"] != format:
            raise KitError(
                f"{where}: the header says format {_short(obj['format'])} but the file "
                f"is a format-{format} kit"
            )
        if obj["suite"] != SUITE_NAMES[format]:
            raise KitError(f"{where}: suite {_short(obj['suite'])} is not supported")
        members_raw = obj["members"]
        if not isinstance(members_raw, list) or not (
            MIN_MEMBERS <= len(members_raw) <= MAX_MEMBERS
        ):
            raise KitError(f"{where}: members must be a list of 2 to 255 entries")
        members = []
        for i, m in enumerate(members_raw):
            if not isinstance(m, dict) or not _is_text(m.get("name")):
                raise KitError(f"{where}: member {i} has no name")
            members.append(
                KitMember(
                    m["name"],
                    _hex_field(m.get("verify_key"), VERIFY_KEY_LEN, f"{where}: member {i}"),
                )
            )
        self_index = _int_field(obj["self"], "self", where)
        if self_index >= len(members):
            raise KitError(f"{where}: self = {self_index} is not a member index")
        slice_len = _int_field(obj["slice_len"], "slice_len", where)
        auth_keys = _int_field(obj["auth_keys"], "auth_keys", where)
        if slice_len < 1 or auth_keys < 1:
            raise KitError(f"{where}: slice_len and auth_keys must be at least 1")
        for key in ("group", "created", "entropy"):
            if not _is_text(obj[key]):
                raise KitError(f"{where}: {key} must be a string")
        length_step = None
        if format == FORMAT_2:
            length_step = _int_field(obj["length_step"], "length_step", where)
            if not MIN_LENGTH_STEP <= length_step <= MAX_LENGTH_STEP:
                raise KitError(
                    f"{where}: length_step must be {MIN_LENGTH_STEP} to {MAX_LENGTH_STEP}"
                )
        return cls(
            pad_id=_hex_field(obj["pad_id"], PAD_ID_LEN, f"{where}: pad_id"),
            group=obj["group"],
            created=obj["created"],
            members=tuple(members),
            self_index=self_index,
            signing_key=_hex_field(obj["signing_key"], 32, f"{where}: signing_key"),
            slice_len=slice_len,
            auth_keys=auth_keys,
            entropy=obj["entropy"],
            format=format,
            length_step=length_step,
        )


def _short(value: object) -> str:
    """A value from a damaged header, quoted briefly (it can be anything)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_text(value: object) -> bool:
    """A string that is valid Unicode text: JSON's escapes can smuggle in lone
    surrogates, which no UTF-8 file, database or terminal can take."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int_field(value: object, name: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise KitError(f"{where}: {name} must be a non-negative integer")
    return value


def _hex_field(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.match(value):
        raise KitError(f"{what} must be {2 * size} lowercase hex characters")
    return bytes.fromhex(value)


@dataclass(frozen=True, slots=True)
class KitLayout:
    """Where each region of a kit lies (sections 3 and 12). Pure arithmetic.

    Offsets named `*_offset` and `*_region` are file offsets; group-pad positions in
    messages are not (format 1: within a slice; format 2: absolute in the group pad).
    """

    n: int
    slice_len: int
    auth_keys: int
    self_index: int
    base: int
    format: int = FORMAT_1

    @classmethod
    def for_header(cls, header: KitHeader, header_len: int) -> KitLayout:
        return cls(
            header.n,
            header.slice_len,
            header.auth_keys,
            header.self_index,
            base_offset(header_len, header.format),
            header.format,
        )

    @property
    def pad_len(self) -> int:
        return self.n * self.slice_len

    @property
    def pair_region_len(self) -> int:
        if self.format == FORMAT_1:
            return self.auth_keys * KEY_LEN
        return HASH_KEY_LEN + self.auth_keys * MASK_LEN

    @property
    def journal_offset(self) -> int:
        """Format 2: the grant journal's first byte."""
        return self.base + self.pad_len + 2 * (self.n - 1) * self.pair_region_len

    @property
    def file_len(self) -> int:
        journal = JOURNAL_LEN if self.format == FORMAT_2 else 0
        return self.journal_offset + journal

    def slice_start(self, sender: int) -> int:
        return self.base + sender * self.slice_len

    def _pair_slot(self, other: int) -> int:
        # Pairs skip self: others below self keep their index, those above shift down one.
        return other if other < self.self_index else other - 1

    def outbound_region(self, recipient: int) -> int:
        """File offset of the region for messages self -> recipient."""
        return self.base + self.pad_len + self._pair_slot(recipient) * self.pair_region_len

    def inbound_region(self, sender: int) -> int:
        """File offset of the region for messages sender -> self."""
        first = self.base + self.pad_len + (self.n - 1) * self.pair_region_len
        return first + self._pair_slot(sender) * self.pair_region_len

    def outbound_key_offset(self, recipient: int, counter: int) -> int:
        """Format 1: file offset of key `counter` for messages self -> recipient."""
        return self.outbound_region(recipient) + counter * KEY_LEN

    def inbound_key_offset(self, sender: int, counter: int) -> int:
        """Format 1: file offset of key `counter` for messages sender -> self."""
        return self.inbound_region(sender) + counter * KEY_LEN

    def mask_offset(self, region: int, counter: int) -> int:
        """Format 2: file offset of mask S_counter in the pair region at `region`
        (the hash key R is the region's first 16 bytes)."""
        return region + HASH_KEY_LEN + counter * MASK_LEN

    def others(self) -> Iterator[int]:
        return (i for i in range(self.n) if i != self.self_index)


def base_offset(header_len: int, format: int = FORMAT_1) -> int:
    """The first pad byte: the first multiple of 4096 at or after the header's end
    (format 1) or the checksum's end (format 2)."""
    end = PREFIX_LEN + header_len + (CHECKSUM_LEN if format == FORMAT_2 else 0)
    return -(-end // PAGE) * PAGE


def encode_prefix(header_json: bytes, format: int = FORMAT_1) -> bytes:
    """Magic, H, header, the checksum (format 2) and zeros up to `base`: everything
    before the pad."""
    head = _PREFIX.pack(MAGICS[format], len(header_json)) + header_json
    if format == FORMAT_2:
        head += hashlib.sha256(head).digest()
    return head + bytes(base_offset(len(header_json), format) - len(head))


def prefix_size(first: bytes, where: str) -> int:
    """From a kit's first 12 bytes, how many bytes `parse_prefix` needs: 12 + H, plus
    the checksum for format 2. Checks the magic and that H is plausible."""
    if len(first) < PREFIX_LEN:
        raise KitError(f"{where}: too short to be a kit file (truncated?)")
    magic, header_len = _PREFIX.unpack_from(first)
    format = _FORMAT_OF_MAGIC.get(magic)
    if format is None:
        raise KitError(f"{where}: not a GhostLine kit (bad magic {magic!r})")
    if header_len > MAX_HEADER_LEN:
        raise KitError(f"{where}: header length {header_len} is implausible")
    return PREFIX_LEN + header_len + (CHECKSUM_LEN if format == FORMAT_2 else 0)


def parse_prefix(raw: bytes, where: str) -> tuple[KitHeader, KitLayout]:
    """The header and layout of a kit whose first bytes are `raw` (at least
    `prefix_size` of them). A format-2 checksum is verified before anything else."""
    size = prefix_size(raw, where)
    if len(raw) < size:
        raise KitError(f"{where}: the header is truncated")
    magic, header_len = _PREFIX.unpack_from(raw)
    format = _FORMAT_OF_MAGIC[magic]
    end = PREFIX_LEN + header_len
    if format == FORMAT_2 and hashlib.sha256(raw[:end]).digest() != raw[end:size]:
        raise KitDamagedError(
            f"{where}: this kit is damaged: its header checksum does not match, so no "
            "field of it (pad id, roster, sizes) can be trusted"
        )
    header = KitHeader.from_json_bytes(raw[PREFIX_LEN:end], where=where, format=format)
    return header, KitLayout.for_header(header, header_len)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_key_of(signing_key: bytes) -> bytes:
    public = Ed25519PrivateKey.from_private_bytes(signing_key).public_key()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
