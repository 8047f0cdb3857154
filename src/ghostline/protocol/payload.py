"""What a sealed message carries (docs/PROTOCOL.md section 7). Pad-free.

Every plaintext starts with `kind (1) || sent_at (4, Unix seconds)`, then a body:

    0x01 TEXT         UTF-8 text
    0x02 FILE_HEADER  transfer_id (8) || total_size (8) || chunk_size (4) ||
                      chunk_count (4) || sha256 (32) || name (UTF-8, the rest)
    0x03 FILE_CHUNK   transfer_id (8) || index (4) || data (the rest, >= 1 byte)
    0x10 GRANT        to (2) || start (8) || end (8)   (format-2 kits only; grants.py)

A file travels as one FILE_HEADER and `chunk_count` FILE_CHUNKs, each its own sealed
message, in any order. Splitting a file, putting it back together and naming it safely
are the file transfer's jobs (`ghostline.files`); this module is the codec alone.

Chunk size: a sealed chunk inside a DELIVER frame is
`1 (type) + 8 (seq) + 42 (header) + 17 (kind, sent_at, id, index) + chunk + 16*(n-1)`
bytes. With n = 255 the fixed part is 4132 bytes, so the relay's 1 MiB + 256 frame
leaves room for chunks up to 1,044,700 bytes. `MAX_CHUNK_SIZE` (1 MiB - 4 KiB) stays
under that; `DEFAULT_CHUNK_SIZE` (64 KiB) gives 69,668-byte frames even at n = 255.

Nothing here reads the clock or randomness: `sent_at` and transfer ids are passed in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

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
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1

_PREFIX = struct.Struct(">BI")
GRANT_PAYLOAD_LEN = PREFIX_LEN + RECORD_LEN  # kind, sent_at, to, start, end
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
    """Announces a file. `name` is what the sender wrote: show or save it only through
    `files.safe_file_name`."""

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
    PayloadError for anything else. (Whether a receiver accepts it is the state
    layer's to decide, with `grants.check_grant`.)"""
    if len(payload) < PREFIX_LEN or payload[0] != Kind.GRANT:
        raise PayloadError("not a grant")
    body = payload[PREFIX_LEN:]
    if len(body) != RECORD_LEN:
        raise PayloadError(f"grant body is {len(body)} bytes, not {RECORD_LEN}")
    _, sent_at = _PREFIX.unpack_from(payload, 0)
    to, start, end = GrantRange.decode(body)
    return GrantPayload(to, start, end, sent_at)


Payload = TextPayload | FileHeader | FileChunk | GrantPayload

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
    if kind == Kind.GRANT:
        return decode_grant(payload)
    raise PayloadError(f"unknown payload kind 0x{kind:02x}")
