"""Kit files (protocol-v1 sections 2 and 3): read, map, and erase used pad material.

A kit is one member's copy of the group pad plus the one-time MAC keys it shares with
each other member. The file is opened with mmap so that sealing reads pad bytes without
copying the whole file and erasing writes zeros in place.

    0      8  magic "GHSTKIT1"
    8      4  H, header length
    12     H  header (UTF-8 JSON)
    12+H   .. zeros up to base (next multiple of 4096)
    base   .. group pad (n*E), outbound keys ((n-1)*K*32), inbound keys ((n-1)*K*32)
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .envelope import MAX_MEMBERS, MIN_MEMBERS, PAD_ID_LEN
from .errors import ErasedKeyError, KitError

MAGIC = b"GHSTKIT1"
FORMAT = 1
SUITE_NAME = "ghostline-otp-poly1305-v1"
KEY_LEN = 32
PAGE = 4096
_PREFIX = struct.Struct(">8sI")
_HEADER_KEYS = (
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
_ZERO_KEY = bytes(KEY_LEN)
_HEX = re.compile(r"\A[0-9a-f]*\Z")


@dataclass(frozen=True, slots=True)
class KitMember:
    name: str
    verify_key: bytes  # raw 32-byte Ed25519 public key


@dataclass(frozen=True, slots=True)
class KitHeader:
    """The JSON header of a kit, with hex fields decoded to bytes."""

    pad_id: bytes
    group: str
    created: str
    members: tuple[KitMember, ...]
    self_index: int
    signing_key: bytes  # raw 32-byte Ed25519 seed
    slice_len: int
    auth_keys: int
    entropy: str

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def self_name(self) -> str:
        return self.members[self.self_index].name

    def to_json_bytes(self) -> bytes:
        """Serialise in the key order of protocol-v1 section 2, compact, UTF-8."""
        obj: dict[str, Any] = {
            "format": FORMAT,
            "suite": SUITE_NAME,
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
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, raw: bytes, *, where: str = "kit") -> KitHeader:
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KitError(f"{where}: the header is not valid UTF-8 JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise KitError(f"{where}: the header is not a JSON object")
        missing = [k for k in _HEADER_KEYS if k not in obj]
        if missing:
            raise KitError(f"{where}: the header lacks {', '.join(missing)}")
        if obj["format"] != FORMAT:
            raise KitError(f"{where}: kit format {obj['format']!r} is not supported (want 1)")
        if obj["suite"] != SUITE_NAME:
            raise KitError(f"{where}: suite {obj['suite']!r} is not supported")
        members_raw = obj["members"]
        if not isinstance(members_raw, list) or not (
            MIN_MEMBERS <= len(members_raw) <= MAX_MEMBERS
        ):
            raise KitError(f"{where}: members must be a list of 2 to 255 entries")
        members = []
        for i, m in enumerate(members_raw):
            if not isinstance(m, dict) or not isinstance(m.get("name"), str):
                raise KitError(f"{where}: member {i} has no name")
            members.append(
                KitMember(m["name"], _hex_field(m.get("verify_key"), 32, f"{where}: member {i}"))
            )
        self_index = _int_field(obj["self"], "self", where)
        if self_index >= len(members):
            raise KitError(f"{where}: self = {self_index} is not a member index")
        slice_len = _int_field(obj["slice_len"], "slice_len", where)
        auth_keys = _int_field(obj["auth_keys"], "auth_keys", where)
        if slice_len < 1 or auth_keys < 1:
            raise KitError(f"{where}: slice_len and auth_keys must be at least 1")
        for key in ("group", "created", "entropy"):
            if not isinstance(obj[key], str):
                raise KitError(f"{where}: {key} must be a string")
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
        )


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
    """Where each region of a kit lies (protocol-v1 section 3). Pure arithmetic."""

    n: int
    slice_len: int
    auth_keys: int
    self_index: int
    base: int

    @classmethod
    def for_header(cls, header: KitHeader, header_len: int) -> KitLayout:
        return cls(
            header.n, header.slice_len, header.auth_keys, header.self_index, base_offset(header_len)
        )

    @property
    def pad_len(self) -> int:
        return self.n * self.slice_len

    @property
    def pair_region_len(self) -> int:
        return self.auth_keys * KEY_LEN

    @property
    def file_len(self) -> int:
        return self.base + self.pad_len + 2 * (self.n - 1) * self.pair_region_len

    def slice_start(self, sender: int) -> int:
        return self.base + sender * self.slice_len

    def _pair_slot(self, other: int) -> int:
        # Pairs skip self: others below self keep their index, those above shift down one.
        return other if other < self.self_index else other - 1

    def outbound_key_offset(self, recipient: int, counter: int) -> int:
        """File offset of key `counter` for messages self -> recipient."""
        region = self.base + self.pad_len + self._pair_slot(recipient) * self.pair_region_len
        return region + counter * KEY_LEN

    def inbound_key_offset(self, sender: int, counter: int) -> int:
        """File offset of key `counter` for messages sender -> self."""
        region = (
            self.base
            + self.pad_len
            + (self.n - 1) * self.pair_region_len
            + self._pair_slot(sender) * self.pair_region_len
        )
        return region + counter * KEY_LEN

    def others(self) -> Iterator[int]:
        return (i for i in range(self.n) if i != self.self_index)


def base_offset(header_len: int) -> int:
    """The first pad byte: the next multiple of 4096 at or after 12 + H."""
    end = _PREFIX.size + header_len
    return -(-end // PAGE) * PAGE


def encode_prefix(header_json: bytes) -> bytes:
    """Magic, H, header and zero padding up to `base`: everything before the pad."""
    head = _PREFIX.pack(MAGIC, len(header_json)) + header_json
    return head + bytes(base_offset(len(header_json)) - len(head))


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_key_of(signing_key: bytes) -> bytes:
    public = Ed25519PrivateKey.from_private_bytes(signing_key).public_key()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Kit:
    """An open kit file, mapped into memory.

    Reading pad or key bytes returns copies (`bytes`). Erasing writes zeros into the
    file through the map; `flush()` makes the erasure durable.
    """

    def __init__(
        self, path: Path, header: KitHeader, layout: KitLayout, mm: mmap.mmap, fd: int
    ) -> None:
        self.path = path
        self.header = header
        self.layout = layout
        self._mm = mm
        self._fd = fd

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = True) -> Kit:
        path = Path(path)
        where = str(path)
        try:
            fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            raise KitError(f"{where}: no such kit file") from None
        except IsADirectoryError:
            raise KitError(f"{where}: is a directory, not a kit file") from None
        except PermissionError:
            raise KitError(f"{where}: permission denied") from None
        try:
            header, layout = _read_header(fd, where)
            size = os.fstat(fd).st_size
            if size != layout.file_len:
                raise KitError(
                    f"{where}: the file is {size} bytes but its header describes "
                    f"{layout.file_len}: truncated or wrong length"
                )
            if verify_key_of(header.signing_key) != header.members[header.self_index].verify_key:
                raise KitError(
                    f"{where}: the signing key does not match member "
                    f"{header.self_index}'s verify key: the kit is damaged or forged"
                )
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            mm = mmap.mmap(fd, size, access=access)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, header, layout, mm, fd)

    def close(self) -> None:
        if not self._mm.closed:
            self._mm.close()
            os.close(self._fd)

    def __enter__(self) -> Kit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------

    @property
    def n(self) -> int:
        return self.header.n

    @property
    def self_index(self) -> int:
        return self.header.self_index

    @property
    def pad_id(self) -> bytes:
        return self.header.pad_id

    def key_stream(self, sender: int, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of `sender`'s slice. Caller checks bounds."""
        start = self.layout.slice_start(sender) + offset
        return self._mm[start : start + length]

    def outbound_key(self, recipient: int, counter: int) -> bytes:
        """MAC key `counter` for self -> recipient; raises ErasedKeyError if zeroed."""
        return self._key_at(self.layout.outbound_key_offset(recipient, counter))

    def inbound_key(self, sender: int, counter: int) -> bytes:
        """MAC key `counter` for sender -> self; raises ErasedKeyError if zeroed."""
        return self._key_at(self.layout.inbound_key_offset(sender, counter))

    def _key_at(self, at: int) -> bytes:
        key = self._mm[at : at + KEY_LEN]
        if key == _ZERO_KEY:
            raise ErasedKeyError("this one-time key has already been used and erased")
        return key

    def is_outbound_key_erased(self, recipient: int, counter: int) -> bool:
        at = self.layout.outbound_key_offset(recipient, counter)
        return self._mm[at : at + KEY_LEN] == _ZERO_KEY

    def is_inbound_key_erased(self, sender: int, counter: int) -> bool:
        at = self.layout.inbound_key_offset(sender, counter)
        return self._mm[at : at + KEY_LEN] == _ZERO_KEY

    def region(self, start: int, length: int) -> memoryview:
        """A read-only view of file bytes; for statistics (`pad info`) and tests."""
        return memoryview(self._mm)[start : start + length].toreadonly()

    # -- erasing ------------------------------------------------------------------

    def erase_key_stream(self, sender: int, offset: int, length: int) -> None:
        start = self.layout.slice_start(sender) + offset
        self._mm[start : start + length] = bytes(length)

    def erase_outbound_keys(self, counter: int) -> None:
        """Erase key `counter` of every self -> r pair (one message's keys)."""
        for r in self.layout.others():
            at = self.layout.outbound_key_offset(r, counter)
            self._mm[at : at + KEY_LEN] = _ZERO_KEY

    def erase_inbound_key(self, sender: int, counter: int) -> None:
        at = self.layout.inbound_key_offset(sender, counter)
        self._mm[at : at + KEY_LEN] = _ZERO_KEY

    def flush(self) -> None:
        """Make erasures durable (msync)."""
        self._mm.flush()


def _read_header(fd: int, where: str) -> tuple[KitHeader, KitLayout]:
    prefix = os.pread(fd, _PREFIX.size, 0)
    if len(prefix) < _PREFIX.size:
        raise KitError(f"{where}: too short to be a kit file (truncated?)")
    magic, header_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise KitError(f"{where}: not a GhostLine kit (bad magic {magic!r})")
    if header_len > 1 << 20:
        raise KitError(f"{where}: header length {header_len} is implausible")
    raw = os.pread(fd, header_len, _PREFIX.size)
    if len(raw) != header_len:
        raise KitError(f"{where}: the header is truncated")
    header = KitHeader.from_json_bytes(raw, where=where)
    return header, KitLayout.for_header(header, header_len)


# --- creating a kit set --------------------------------------------------------------

KIT_SUFFIX = ".ghostkit"
_CHUNK = 1 << 22


def create_kit_set(
    out_dir: str | os.PathLike[str],
    names: list[str],
    *,
    slice_len: int,
    auth_keys: int,
    group: str,
    random_bytes: Callable[[int], bytes],
    entropy: str,
    pad_id: bytes | None = None,
    created: str | None = None,
    signing_seeds: list[bytes] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write `out_dir/NAME.ghostkit` for every member and return their paths.

    `random_bytes(k)` supplies all pad and key material, streamed in chunks so a kit set
    larger than memory can be made. Files are created with O_EXCL and mode 0600; if any
    already exists nothing is overwritten and the files made so far are removed.
    `progress(k)` is called with the number of random bytes just consumed.
    """
    n = len(names)
    if not MIN_MEMBERS <= n <= MAX_MEMBERS:
        raise KitError(f"a group has 2 to 255 members, not {n}")
    if len(set(names)) != n:
        raise KitError("member names must be distinct")
    if slice_len < 1 or auth_keys < 1:
        raise KitError("slice length and key count must be at least 1")
    out = Path(out_dir)
    seeds = signing_seeds or [
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        for _ in names
    ]
    members = tuple(
        KitMember(name, verify_key_of(seed)) for name, seed in zip(names, seeds, strict=True)
    )
    pad_id = pad_id if pad_id is not None else os.urandom(PAD_ID_LEN)
    created = created or now_rfc3339()
    headers = [
        KitHeader(pad_id, group, created, members, i, seeds[i], slice_len, auth_keys, entropy)
        for i in range(n)
    ]
    paths = [out / f"{name}{KIT_SUFFIX}" for name in names]
    files: list[Any] = []
    try:
        for path in paths:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            files.append(os.fdopen(fd, "wb", buffering=0))
        for f, header in zip(files, headers, strict=True):
            f.write(encode_prefix(header.to_json_bytes()))
        _stream_random(random_bytes, n * slice_len, files, progress)
        region = auth_keys * KEY_LEN
        # Outbound s->r sits in s's kit; the same bytes are inbound s->r in r's kit.
        # Each kit lists outbound regions first (increasing r), then inbound (increasing
        # s), so write every kit's outbound part pair by pair, then its inbound part.
        pair_bytes: dict[tuple[int, int], bytes] = {}
        big = region > _CHUNK
        for s in range(n):
            for r in range(n):
                if s == r:
                    continue
                if big:
                    raise KitError("more than 4 MiB of keys per pair is not supported")
                pair_bytes[(s, r)] = random_bytes(region)
                if progress:
                    progress(region)
        for me, f in enumerate(files):
            for r in range(n):
                if r != me:
                    f.write(pair_bytes[(me, r)])
            for s in range(n):
                if s != me:
                    f.write(pair_bytes[(s, me)])
        pair_bytes.clear()
        for f in files:
            os.fsync(f.fileno())
            f.close()
        _fsync_dir(out)
    except BaseException:
        for f in files:
            f.close()
        for path, _f in zip(paths, files, strict=False):
            path.unlink(missing_ok=True)
        raise
    return paths


def _stream_random(
    random_bytes: Callable[[int], bytes],
    total: int,
    files: list[Any],
    progress: Callable[[int], None] | None,
) -> None:
    left = total
    while left:
        chunk = random_bytes(min(_CHUNK, left))
        for f in files:
            f.write(chunk)
        left -= len(chunk)
        if progress:
            progress(len(chunk))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
