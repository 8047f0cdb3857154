"""What a sealed message carries (protocol-v1 section 7, docs/PROTOCOL.md). Pad-free.

Every plaintext starts with `kind (1) || sent_at (4, Unix seconds)`, then a body:

    0x01 TEXT         UTF-8 text
    0x02 FILE_HEADER  transfer_id (8) || total_size (8) || chunk_size (4) ||
                      chunk_count (4) || sha256 (32) || name (UTF-8, the rest)
    0x03 FILE_CHUNK   transfer_id (8) || index (4) || data (the rest, >= 1 byte)
    0x10 GRANT        to (2) || start (8) || end (8)   (format-2 kits only; grants.py)

A file travels as one FILE_HEADER and `chunk_count` FILE_CHUNKs, each its own sealed
message, in any order. `FileAssembly` puts them back together and hands out the bytes
only when every chunk is there and the SHA-256 matches.

Chunk size: a sealed chunk inside a DELIVER frame is
`1 (type) + 8 (seq) + 42 (header) + 17 (kind, sent_at, id, index) + chunk + 16*(n-1)`
bytes. With n = 255 the fixed part is 4132 bytes, so the relay's 1 MiB + 256 frame
leaves room for chunks up to 1,044,700 bytes. `MAX_CHUNK_SIZE` (1 MiB - 4 KiB) stays
under that; `DEFAULT_CHUNK_SIZE` (64 KiB) gives 69,668-byte frames even at n = 255.

Nothing here reads the clock or randomness: `sent_at` and transfer ids are passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from ..errors import PayloadError
from .grants import RECORD_LEN, GrantRange


class Kind(IntEnum):
    TEXT = 0x01
    FILE_HEADER = 0x02
    FILE_CHUNK = 0x03
    GRANT = 0x10


PREFIX_LEN = 5
TRANSFER_ID_LEN = 8
SHA256_LEN = 32
DEFAULT_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = (1 << 20) - 4096
DEFAULT_MAX_FILE_SIZE = 1 << 30
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1

_PREFIX = struct.Struct(">BI")
_FILE_HEADER = struct.Struct(">8sQII32s")
_FILE_CHUNK = struct.Struct(">8sI")
assert _PREFIX.size == PREFIX_LEN


def _check_sent_at(sent_at: int) -> None:
    if not 0 <= sent_at <= _U32_MAX:
        raise ValueError(f"sent_at {sent_at} does not fit in 4 bytes")


def chunk_count_for(total_size: int, chunk_size: int) -> int:
    """How many chunks a file of `total_size` bytes needs (0 for an empty file)."""
    return -(-total_size // chunk_size)


@dataclass(frozen=True, slots=True)
class TextPayload:
    text: str
    sent_at: int

    def __post_init__(self) -> None:
        _check_sent_at(self.sent_at)

    def encode(self) -> bytes:
        return _PREFIX.pack(Kind.TEXT, self.sent_at) + self.text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class FileHeader:
    """Announces a file. `name` is what the sender wrote; show or save `safe_name`."""

    transfer_id: bytes
    total_size: int
    chunk_size: int
    chunk_count: int
    sha256: bytes
    name: str
    sent_at: int

    def __post_init__(self) -> None:
        _check_sent_at(self.sent_at)
        if len(self.transfer_id) != TRANSFER_ID_LEN:
            raise ValueError(f"a transfer id is {TRANSFER_ID_LEN} bytes")
        if len(self.sha256) != SHA256_LEN:
            raise ValueError(f"a SHA-256 digest is {SHA256_LEN} bytes")
        if not 0 <= self.total_size <= _U64_MAX:
            raise ValueError(f"total size {self.total_size} does not fit in 8 bytes")
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {self.chunk_size} is not in 1..{MAX_CHUNK_SIZE}")
        expected = chunk_count_for(self.total_size, self.chunk_size)
        if self.chunk_count != expected:
            raise ValueError(
                f"{self.total_size} bytes in chunks of {self.chunk_size} make {expected} "
                f"chunks, not {self.chunk_count}"
            )
        if expected > _U32_MAX:
            raise ValueError(f"{expected} chunks do not fit in 4 bytes")

    def encode(self) -> bytes:
        return (
            _PREFIX.pack(Kind.FILE_HEADER, self.sent_at)
            + _FILE_HEADER.pack(
                self.transfer_id, self.total_size, self.chunk_size, self.chunk_count, self.sha256
            )
            + self.name.encode("utf-8")
        )

    @property
    def safe_name(self) -> str:
        return safe_file_name(self.name)

    def chunk_len(self, index: int) -> int:
        """The exact length chunk `index` must have."""
        if not 0 <= index < self.chunk_count:
            raise ValueError(f"chunk {index} is not in 0..{self.chunk_count - 1}")
        if index < self.chunk_count - 1:
            return self.chunk_size
        return self.total_size - (self.chunk_count - 1) * self.chunk_size

    def same_file(self, other: FileHeader) -> bool:
        """True when `other` announces the same transfer (sent_at may differ)."""
        return (
            self.transfer_id,
            self.total_size,
            self.chunk_size,
            self.chunk_count,
            self.sha256,
            self.name,
        ) == (
            other.transfer_id,
            other.total_size,
            other.chunk_size,
            other.chunk_count,
            other.sha256,
            other.name,
        )


@dataclass(frozen=True, slots=True)
class FileChunk:
    transfer_id: bytes
    index: int
    data: bytes
    sent_at: int

    def __post_init__(self) -> None:
        _check_sent_at(self.sent_at)
        if len(self.transfer_id) != TRANSFER_ID_LEN:
            raise ValueError(f"a transfer id is {TRANSFER_ID_LEN} bytes")
        if not 0 <= self.index <= _U32_MAX:
            raise ValueError(f"chunk index {self.index} does not fit in 4 bytes")
        if not self.data:
            raise ValueError("a file chunk carries at least one byte")

    def encode(self) -> bytes:
        return (
            _PREFIX.pack(Kind.FILE_CHUNK, self.sent_at)
            + _FILE_CHUNK.pack(self.transfer_id, self.index)
            + self.data
        )


@dataclass(frozen=True, slots=True)
class GrantPayload:
    """Member `sender` (the message's) gives [start, end) of the group pad to `to`.

    The codec checks field widths only; `grants.check_grant` decides whether a receiver
    accepts it.
    """

    to: int
    start: int
    end: int
    sent_at: int

    def __post_init__(self) -> None:
        _check_sent_at(self.sent_at)
        self.grant.encode()  # raises ValueError when a field does not fit

    @property
    def grant(self) -> GrantRange:
        return GrantRange(self.to, self.start, self.end)

    def encode(self) -> bytes:
        return _PREFIX.pack(Kind.GRANT, self.sent_at) + self.grant.encode()


def decode_grant(payload: bytes) -> GrantPayload:
    """Parse a GRANT payload: kind 0x10, sent_at, then exactly 18 bytes. Raises
    PayloadError for anything else.

    Not part of `decode` yet: the displays (listen, history, chat) do not know grants,
    and until the state layer applies them a grant is, to them, a kind they cannot
    show (which is what `decode` reports).
    """
    if len(payload) < PREFIX_LEN or payload[0] != Kind.GRANT:
        raise PayloadError("not a grant")
    body = payload[PREFIX_LEN:]
    if len(body) != RECORD_LEN:
        raise PayloadError(f"grant body is {len(body)} bytes, not {RECORD_LEN}")
    _, sent_at = _PREFIX.unpack_from(payload, 0)
    to, start, end = GrantRange.decode(body)
    return GrantPayload(to, start, end, sent_at)


Payload = TextPayload | FileHeader | FileChunk

# What names a chunk: kind, sent_at, transfer id and index. `chunk_head` needs no more.
FILE_CHUNK_HEAD_LEN = PREFIX_LEN + _FILE_CHUNK.size


def chunk_head(payload: bytes) -> tuple[bytes, int]:
    """(transfer_id, index) of a FILE_CHUNK payload from its first FILE_CHUNK_HEAD_LEN
    bytes (the data may be cut off). Raises PayloadError for anything else."""
    if len(payload) < FILE_CHUNK_HEAD_LEN or payload[0] != Kind.FILE_CHUNK:
        raise PayloadError("not the head of a file chunk")
    transfer_id, index = _FILE_CHUNK.unpack_from(payload, PREFIX_LEN)
    return bytes(transfer_id), int(index)


def encode_text(text: str, sent_at: int) -> bytes:
    return TextPayload(text, sent_at).encode()


def decode(payload: bytes) -> Payload:
    """Parse a plaintext. Raises PayloadError when it is malformed or of an unknown kind."""
    if len(payload) < PREFIX_LEN:
        raise PayloadError(
            f"payload is {len(payload)} bytes, shorter than the 5-byte kind and time"
        )
    kind, sent_at = _PREFIX.unpack_from(payload, 0)
    body = payload[PREFIX_LEN:]
    if kind == Kind.TEXT:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("text message is not valid UTF-8") from None
        return TextPayload(text, sent_at)
    if kind == Kind.FILE_HEADER:
        if len(body) < _FILE_HEADER.size:
            raise PayloadError(
                f"file header body is {len(body)} bytes, needs at least {_FILE_HEADER.size}"
            )
        transfer_id, total, chunk_size, count, digest = _FILE_HEADER.unpack_from(body, 0)
        try:
            name = body[_FILE_HEADER.size :].decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("file name is not valid UTF-8") from None
        try:
            return FileHeader(transfer_id, total, chunk_size, count, digest, name, sent_at)
        except ValueError as exc:
            raise PayloadError(f"malformed file header: {exc}") from None
    if kind == Kind.FILE_CHUNK:
        if len(body) <= _FILE_CHUNK.size:
            raise PayloadError(
                f"file chunk body is {len(body)} bytes, needs more than {_FILE_CHUNK.size}"
            )
        transfer_id, index = _FILE_CHUNK.unpack_from(body, 0)
        return FileChunk(transfer_id, index, body[_FILE_CHUNK.size :], sent_at)
    raise PayloadError(f"unknown payload kind 0x{kind:02x}")


# --- files -------------------------------------------------------------------------


def split_file(
    source: bytes | str | os.PathLike[str],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    transfer_id: bytes,
    sent_at: int,
    name: str | None = None,
) -> tuple[FileHeader, Iterator[FileChunk]]:
    """The header and chunks that send `source` (bytes, or a path read lazily).

    `name` defaults to the path's last component; bytes need one. Every chunk carries
    `sent_at`. A path is read twice (hash, then chunks): if the file changes in
    between, the receiver's SHA-256 check fails rather than accepting mixed contents.
    """
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {chunk_size} is not in 1..{MAX_CHUNK_SIZE}")
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if name is None:
            raise ValueError("split_file needs a name when given bytes")
        total, digest = len(data), hashlib.sha256(data).digest()
        chunks: Iterator[bytes] = (
            data[i : i + chunk_size] for i in range(0, len(data), chunk_size)
        )
    else:
        path = Path(source)
        if name is None:
            name = path.name
        total, digest = _hash_file(path)
        chunks = _read_chunks(path, chunk_size, total)
    header = FileHeader(
        transfer_id, total, chunk_size, chunk_count_for(total, chunk_size), digest, name, sent_at
    )
    parts = (FileChunk(transfer_id, i, c, sent_at) for i, c in enumerate(chunks))
    return header, parts


def _hash_file(path: Path) -> tuple[int, bytes]:
    h = hashlib.sha256()
    total = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            total += len(block)
    return total, h.digest()


def _read_chunks(path: Path, chunk_size: int, total: int) -> Iterator[bytes]:
    left = total
    with path.open("rb") as f:
        while left > 0:
            block = f.read(min(chunk_size, left))
            if not block:
                return  # the file shrank; the receiver's length check catches it
            left -= len(block)
            yield block


class FileAssembly:
    """Reassembles one transfer from its header and chunks, arriving in any order.

    Key assemblies by `(sender, transfer_id)`: transfer ids are chosen by each sender
    and only unique per sender. `add` ignores exact duplicates, raises PayloadError
    (and keeps its state) for anything inconsistent, and returns the file bytes once,
    when the last missing piece arrives and the length and SHA-256 match.
    """

    def __init__(self, transfer_id: bytes, *, max_size: int = DEFAULT_MAX_FILE_SIZE) -> None:
        if len(transfer_id) != TRANSFER_ID_LEN:
            raise ValueError(f"a transfer id is {TRANSFER_ID_LEN} bytes")
        self.transfer_id = transfer_id
        self.max_size = max_size
        self.header: FileHeader | None = None
        self.done = False
        self.failed = False
        self._chunks: dict[int, bytes] = {}
        self._digests: dict[int, bytes] = {}  # after completion, to recognise duplicates
        self._received = 0

    @property
    def received(self) -> int:
        """Bytes of distinct chunks received so far (all of them once done)."""
        return self._received

    @property
    def total(self) -> int | None:
        """The file's size, once the header has arrived."""
        return self.header.total_size if self.header else None

    def missing(self) -> list[int]:
        """Chunk indexes still missing (empty before the header arrives)."""
        if self.header is None or self.done:
            return []
        return [i for i in range(self.header.chunk_count) if i not in self._chunks]

    def add(self, part: FileHeader | FileChunk) -> bytes | None:
        if self.failed:
            raise PayloadError("this file transfer already failed its integrity check")
        if part.transfer_id != self.transfer_id:
            raise PayloadError("the part belongs to another file transfer")
        if isinstance(part, FileHeader):
            self._add_header(part)
        else:
            self._add_chunk(part)
        return self._finish()

    def _add_header(self, header: FileHeader) -> None:
        if self.header is not None:
            if not self.header.same_file(header):
                raise PayloadError("a second, different header for the same file transfer")
            return
        if header.total_size > self.max_size:
            raise PayloadError(
                f"the file is {header.total_size} bytes, over the {self.max_size}-byte limit"
            )
        for index, data in self._chunks.items():
            _check_chunk_fits(header, index, data)
        self.header = header

    def _add_chunk(self, chunk: FileChunk) -> None:
        index, data = chunk.index, chunk.data
        if self.header is not None:
            _check_chunk_fits(self.header, index, data)
        if self.done:
            if hashlib.sha256(data).digest() != self._digests[index]:
                raise PayloadError(f"chunk {index} differs from the one already received")
            return
        held = self._chunks.get(index)
        if held is not None:
            if not hmac.compare_digest(held, data):
                raise PayloadError(f"chunk {index} differs from the one already received")
            return
        if self._received + len(data) > self.max_size:
            raise PayloadError(f"the file grows past the {self.max_size}-byte limit")
        self._chunks[index] = data
        self._received += len(data)

    def _finish(self) -> bytes | None:
        header = self.header
        if self.done or header is None or len(self._chunks) < header.chunk_count:
            return None
        data = b"".join(self._chunks[i] for i in range(header.chunk_count))
        if len(data) != header.total_size or hashlib.sha256(data).digest() != header.sha256:
            self.failed = True
            self._chunks.clear()
            raise PayloadError("the received file does not match its SHA-256: discarded")
        self._digests = {i: hashlib.sha256(c).digest() for i, c in self._chunks.items()}
        self._chunks.clear()
        self.done = True
        return data


def _check_chunk_fits(header: FileHeader, index: int, data: bytes) -> None:
    if index >= header.chunk_count:
        raise PayloadError(f"chunk {index} is past the file's {header.chunk_count} chunks")
    want = header.chunk_len(index)
    if len(data) != want:
        raise PayloadError(f"chunk {index} is {len(data)} bytes, the header says {want}")


# --- file names ----------------------------------------------------------------------

_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')
_MAX_NAME_BYTES = 200
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def safe_file_name(name: str, default: str = "file") -> str:
    """A bare file name safe to create in a downloads folder and to show.

    Keeps only the last path component (either slash), turns every kind of white space
    into a plain space, drops control, format (bidi overrides), private-use and
    unassigned characters, replaces characters Windows
    forbids, strips leading/trailing dots and spaces (no hidden files, no `..`),
    dodges Windows device names and caps the length at 200 UTF-8 bytes, keeping the
    extension. Returns `default` when nothing is left.
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(
        " " if ch.isspace() else ch
        for ch in name
        if unicodedata.category(ch) not in _DROP_CATEGORIES or ch.isspace()
    )
    name = _UNSAFE_CHARS.sub("_", name).strip(" .")
    if not name:
        return default
    if name.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or len(ext.encode("utf-8")) > 20:
            stem, ext = name, ""
        room = _MAX_NAME_BYTES - (len(ext.encode("utf-8")) + 1 if ext else 0)
        stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
        name = f"{stem}.{ext}" if ext else stem
    return name or default
