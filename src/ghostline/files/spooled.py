"""A file to send that stays on disk until it is sealed: the chat app's `/file` and the
web app's uploads alike.

Both apps ask the person to confirm the pad cost first, and a file may be large (the web
app's uploads up to 1 GiB each, the chat app's as large as the pad allows): so it is
hashed once (`read_file`), and its parts are read from disk only as they are sealed, one
group at a time (`SpooledParts`; `outgoing.prepare_file` and `outgoing.spool_file` make
the OutgoingFile). Its size and cost are known without reading it again.

The header carries the SHA-256 read at the start, so the parts must be that file, not a
mix of it and a later version. Two checks refuse a file that changed (FileChanged), and
nothing more of it is sealed:

- before each group is read, the file's size, mtime, ctime, inode and device must be
  what they were while it was hashed (a save, a rename over it, an append, a `touch`);
- the parts are hashed as they are read, in order, and the last one is given out only
  when the whole matches the header's SHA-256 (a change the first check cannot see, such
  as a write in the same clock tick). The parts before it may have been sealed and sent
  by then: without the last one, no receiver can complete the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, overload

from ..errors import FileChanged
from ..protocol.payload import DEFAULT_CHUNK_SIZE, FILE_CHUNK_HEAD_LEN, FileChunk, FileHeader
from .names import safe_file_name
from .split import file_header, hash_stream


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What the file system says of a file's identity and last change."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, f: BinaryIO) -> FileStamp:
        st = os.fstat(f.fileno())
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def read_file(
    path: Path, *, transfer_id: bytes, sent_at: int, name: str, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> SpooledParts:
    """Hash the file at `path` (sent as `name`) and give its parts, to be read when
    sealed. Blocking: it reads the file once, 1 MiB at a time. Raises OSError when it
    cannot be read, FileChanged when it changed while it was being hashed."""
    with path.open("rb") as f:
        stamp = FileStamp.of(f)
        total, digest = hash_stream(f)
        if FileStamp.of(f) != stamp or total != stamp.size:
            raise FileChanged(safe_file_name(name))
    header = file_header(total, digest, chunk_size, transfer_id=transfer_id, sent_at=sent_at,
                         name=name)  # fmt: skip
    return SpooledParts(path, header, stamp)


class SpooledParts(Sequence[bytes]):
    """The encoded payloads (header, then every chunk) of the file at `path`, read from
    it when asked for: a slice (a seal group) with one open and one stamp check. Parts
    are checked against the header's SHA-256 as they are read in order (from the first
    chunk); the last chunk is given only after all the others were, in order."""

    def __init__(self, path: Path, header: FileHeader, stamp: FileStamp) -> None:
        self.path = path
        self.header = header
        self.stamp = stamp
        self._header = header.encode()
        self._hash = hashlib.sha256()
        self._next: int | None = 0  # the chunk the running hash expects; None: out of order

    def __len__(self) -> int:
        return 1 + self.header.chunk_count

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return self._read(range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._read(range(index, index + 1))[0]

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(len(self)))

    def sizes(self) -> list[int]:
        """Every payload's length, without reading the file."""
        return [len(self._header)] + [
            FILE_CHUNK_HEAD_LEN + self._chunk_len(i) for i in range(self.header.chunk_count)
        ]

    def _read(self, indices: range) -> list[bytes]:
        chunks = [i - 1 for i in indices if i > 0]
        out = [self._header] if 0 in indices else []
        if not chunks:
            return out
        header = self.header
        with self.path.open("rb") as f:
            if FileStamp.of(f) != self.stamp:
                raise self._changed()
            for chunk in chunks:
                size = self._chunk_len(chunk)
                f.seek(chunk * header.chunk_size)
                data = f.read(size)
                if len(data) != size:
                    raise self._changed()
                self._hashed(chunk, data)
                out.append(FileChunk(header.transfer_id, chunk, data, header.sent_at).encode())
        return out

    def _hashed(self, chunk: int, data: bytes) -> None:
        """Add `chunk` to the running hash; at the last chunk, check the whole."""
        if chunk == 0:
            self._hash, self._next = hashlib.sha256(), 0
        if chunk == self._next:
            self._hash.update(data)
            self._next += 1
        else:
            self._next = None
        if chunk == self.header.chunk_count - 1:
            if self._next is None:
                # Not a change on disk: a caller that skipped parts cannot be checked.
                raise RuntimeError("the last part of a file is read only after all others")
            if self._hash.digest() != self.header.sha256:
                raise self._changed()

    def _changed(self) -> FileChanged:
        return FileChanged(safe_file_name(self.header.name))

    def _chunk_len(self, chunk: int) -> int:
        start = chunk * self.header.chunk_size
        return min(self.header.chunk_size, self.header.total_size - start)


def payload_sizes(payloads: Sequence[bytes]) -> list[int]:
    """The length of every payload; spooled ones without reading their file."""
    if isinstance(payloads, SpooledParts):
        return payloads.sizes()
    return [len(p) for p in payloads]
