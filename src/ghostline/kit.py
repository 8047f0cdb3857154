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

import errno
import fcntl
import json
import mmap
import os
import queue
import re
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .envelope import MAX_MEMBERS, MIN_MEMBERS, PAD_ID_LEN
from .errors import ErasedKeyError, KitError, KitExistsError, KitReadOnlyError
from .fsutil import fsync_dir

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
        except OSError as exc:
            denied = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            if denied and writable and os.access(path, os.R_OK):
                raise KitReadOnlyError(where) from None
            if denied:
                raise KitError(f"{where}: permission denied") from None
            raise KitError(f"{where}: cannot open it ({exc.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise KitError(f"{where}: is a directory or device, not a kit file")
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

    def outbound_keys(self, counter: int) -> list[bytes]:
        """Key `counter` of every pair self -> r, increasing r: one message's MAC keys.

        Raises ErasedKeyError if any of them is zeroed. (Sealing's hot path: one
        offset computation instead of one per recipient.)
        """
        lay = self.layout
        step = lay.auth_keys * KEY_LEN
        first = lay.base + lay.n * lay.slice_len + counter * KEY_LEN
        mm = self._mm
        keys = [mm[at : at + KEY_LEN] for at in range(first, first + (lay.n - 1) * step, step)]
        if _ZERO_KEY in keys:
            raise ErasedKeyError("this one-time key has already been used and erased")
        return keys

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

    @contextmanager
    def seal_lock(self) -> Iterator[None]:
        """Hold the kit file's exclusive lock (flock), across processes: a sealer holds
        it from its commit until its erasure is flushed (member.py relies on it)."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            yield  # no locks on this file system: the margin then holds for one sealer
            return
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


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
# Random material is drawn and written in chunks of this size: large enough that
# syscall and Python overhead vanish, small enough that memory use stays flat.
CHUNK = 1 << 22


def kit_set_random_len(n: int, slice_len: int, auth_keys: int) -> int:
    """Random bytes one kit set consumes: the group pad plus one region per ordered pair."""
    return n * slice_len + n * (n - 1) * auth_keys * KEY_LEN


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
    chunk_size: int = CHUNK,
) -> list[Path]:
    """Write `out_dir/NAME.ghostkit` for every member and return their paths.

    `random_bytes(k)` supplies all pad and key material, at most `chunk_size` bytes per
    call, consumed in this order: the group pad (n*E bytes), then the key region of
    each ordered pair s -> r (K*32 bytes), s then r increasing. Each chunk is drawn once
    and written where it belongs in every kit that holds it: the group pad into all n
    kits, pair s -> r as outbound in s's kit and inbound in r's kit. Memory use is a
    few chunks, whatever the size of the kit set.

    Each kit is written with mode 0600 under a hidden temporary name (O_EXCL), fsynced,
    and only then linked to its real name, which never replaces an existing file; then
    the directory is fsynced. If any kit file already exists nothing is overwritten
    (KitExistsError); on any failure (a health test, a full disk, Ctrl-C) every file
    this call created is removed.
    `progress(k)` is called with the number of random bytes just consumed.
    """
    n = len(names)
    if not MIN_MEMBERS <= n <= MAX_MEMBERS:
        raise KitError(f"a group has 2 to 255 members, not {n}")
    if len(set(names)) != n:
        raise KitError("member names must be distinct")
    if slice_len < 1 or auth_keys < 1:
        raise KitError("slice length and key count must be at least 1")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    out = Path(out_dir)
    paths = [out / f"{name}{KIT_SUFFIX}" for name in names]
    for path in paths:  # O_EXCL below is the real guard; this just fails before any work
        if os.path.lexists(path):
            raise KitExistsError(f"{path} already exists; GhostLine never overwrites a kit")
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
    header_json = [h.to_json_bytes() for h in headers]
    layouts = [KitLayout.for_header(h, len(j)) for h, j in zip(headers, header_json, strict=True)]

    # Each kit is written under a hidden temporary name and appears under its real name
    # only once complete and durable (hard link, which never replaces a file), so a kit
    # file that exists is never half-written, even after a crash or a power cut.
    tmps = [out / f".{path.name}.partial-{os.urandom(8).hex()}" for path in paths]
    fds: list[int] = []
    opened: list[Path] = []
    published: list[Path] = []
    writer: _Writer | None = None
    try:
        for tmp in tmps:
            # Recorded before the open so that an interrupt right after it still removes
            # the file; the name is random, so removing it can never harm another file.
            opened.append(tmp)
            fds.append(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        for fd, raw, layout in zip(fds, header_json, layouts, strict=True):
            os.ftruncate(fd, layout.file_len)  # the gap up to `base` reads as zeros
            _pwrite_all(fd, encode_prefix(raw), 0)
        writer = _Writer(fds)
        writer.start()
        for length, places in _regions(layouts, fds):
            done = 0
            while done < length:
                want = min(chunk_size, length - done)
                chunk = random_bytes(want)
                if len(chunk) != want:
                    raise KitError(f"the randomness source gave {len(chunk)} bytes, not {want}")
                writer.put(chunk, [(fd, at + done) for fd, at in places])
                done += len(chunk)
                if progress:
                    progress(len(chunk))
        writer.finish()
        writer = None
        for fd in fds:
            os.fsync(fd)
        for tmp, path in zip(tmps, paths, strict=True):
            _publish(tmp, path)
            published.append(path)
            tmp.unlink()
        fsync_dir(out)
    except BaseException:
        try:
            if writer is not None:
                writer.abort()
        finally:
            for fd in fds:
                os.close(fd)
            fds.clear()
            for tmp, path in zip(tmps, paths, strict=True):
                if path in published or _same_file(tmp, path):
                    path.unlink(missing_ok=True)
            for tmp in opened:
                tmp.unlink(missing_ok=True)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return paths


def _publish(tmp: Path, path: Path) -> None:
    """Give the finished kit `tmp` its real name `path`, never replacing a file there."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise KitExistsError(f"{path} already exists; GhostLine never overwrites a kit") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    # No hard links here (FAT and exFAT USB sticks): copy into a new O_EXCL file instead.
    try:
        dst = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KitExistsError(f"{path} already exists; GhostLine never overwrites a kit") from None
    try:
        with open(tmp, "rb") as src:
            while block := src.read(CHUNK):
                _pwrite_all(dst, block, src.tell() - len(block))
        os.fsync(dst)
    except BaseException:
        os.close(dst)
        path.unlink(missing_ok=True)
        raise
    os.close(dst)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _regions(
    layouts: list[KitLayout], fds: list[int]
) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """(length, [(fd, file offset), ...]) of every random region, in generation order."""
    n = len(layouts)
    yield layouts[0].pad_len, [(fd, lay.base) for fd, lay in zip(fds, layouts, strict=True)]
    region = layouts[0].pair_region_len
    for s in range(n):
        for r in range(n):
            if s != r:
                # Outbound s->r in s's kit is byte-identical to inbound s->r in r's kit.
                yield (
                    region,
                    [
                        (fds[s], layouts[s].outbound_key_offset(r, 0)),
                        (fds[r], layouts[r].inbound_key_offset(s, 0)),
                    ],
                )


class _Writer(threading.Thread):
    """Writes chunks in the background while the next one is drawn.

    os.urandom, os.pwrite and os.fdatasync all release the GIL, so drawing, writing
    and flushing overlap. A second thread flushes the kits to disk as they grow:
    otherwise the kernel would hold the whole kit set dirty in memory and the final
    fsync would write it all while nothing else happens (that alone cost a third of
    the time for a 256 MiB pad). A write error is kept and re-raised by the producer
    at its next `put` or at `finish`.
    """

    FLUSH_EVERY = 0.05  # seconds between rounds of fdatasync

    def __init__(self, fds: list[int]) -> None:
        super().__init__(name="ghostline-kit-writer", daemon=True)
        self._fds = fds
        self._queue: queue.Queue[tuple[bytes, list[tuple[int, int]]] | None] = queue.Queue(2)
        self._error: BaseException | None = None
        self._aborted = False
        self._done = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush, name="ghostline-kit-flusher", daemon=True
        )

    def start(self) -> None:
        super().start()
        self._flusher.start()

    def run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._aborted or self._error is not None:
                continue  # drain, so a blocked producer can always finish its put
            chunk, places = item
            try:
                for fd, at in places:
                    _pwrite_all(fd, chunk, at)
            except BaseException as exc:  # re-raised in the producer's thread
                self._error = exc

    def _flush(self) -> None:
        while not self._done.wait(self.FLUSH_EVERY):
            try:
                for fd in self._fds:
                    os.fdatasync(fd)
            except OSError as exc:
                self._error = self._error or exc
                return

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, chunk: bytes, places: list[tuple[int, int]]) -> None:
        self._raise_error()
        self._queue.put((chunk, places))

    def _stop_threads(self) -> None:
        # Ctrl-C can land between starting the two threads: join only what started.
        if self.ident is not None:
            self._queue.put(None)
            self.join()
        self._done.set()
        if self._flusher.ident is not None:
            self._flusher.join()

    def finish(self) -> None:
        self._stop_threads()
        self._raise_error()

    def abort(self) -> None:
        self._aborted = True
        self._stop_threads()


def _pwrite_all(fd: int, data: bytes, at: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, at)
        view = view[written:]
        at += written
