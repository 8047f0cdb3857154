"""Putting a received file back together from its FILE_HEADER and FILE_CHUNKs, which may
come in any order (docs/PROTOCOL.md section 7, "Receiving a file")."""

from __future__ import annotations

import hashlib
import hmac

from ..errors import PayloadError
from ..protocol.payload import TRANSFER_ID_LEN, FileChunk, FileHeader

# The largest file a receiver reassembles (in memory), unless told otherwise.
DEFAULT_MAX_FILE_SIZE = 1 << 30


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
