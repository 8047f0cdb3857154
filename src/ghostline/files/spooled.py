"""A file to send that stays on disk until it is sealed: the web app's uploads.

`prepare_file` reads a whole file into memory, which the chat app can afford for the
moment it takes to seal it. The web app asks the person to confirm the pad cost first,
and a page could leave any number of offers of up to 1 GiB waiting: so an upload stays
in its private spool file, and its parts are read from there only as they are sealed,
one group at a time (`SpooledParts`; `outgoing.spool_file` makes the OutgoingFile).
Its size and cost are known without reading it again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

from ..errors import UsageError
from ..protocol.payload import FILE_CHUNK_HEAD_LEN, FileChunk, FileHeader
from .names import safe_file_name


class SpooledParts(Sequence[bytes]):
    """The encoded payloads (header, then every chunk) of the file at `path`, read
    from it when asked for. The file must not change (it is private to this process)."""

    def __init__(self, path: Path, header: FileHeader) -> None:
        self.path = path
        self.header = header
        self._header = header.encode()

    def __len__(self) -> int:
        return 1 + self.header.chunk_count

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index == 0:
            return self._header
        chunk = index - 1
        size = self._chunk_len(chunk)
        with self.path.open("rb") as f:
            f.seek(chunk * self.header.chunk_size)
            data = f.read(size)
        if len(data) != size:
            name = safe_file_name(self.header.name)
            raise UsageError(f"{name}: the file changed before it was sent")
        return FileChunk(self.header.transfer_id, chunk, data, self.header.sent_at).encode()

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(len(self)))

    def sizes(self) -> list[int]:
        """Every payload's length, without reading the file."""
        return [len(self._header)] + [
            FILE_CHUNK_HEAD_LEN + self._chunk_len(i) for i in range(self.header.chunk_count)
        ]

    def _chunk_len(self, chunk: int) -> int:
        start = chunk * self.header.chunk_size
        return min(self.header.chunk_size, self.header.total_size - start)


def payload_sizes(payloads: Sequence[bytes]) -> list[int]:
    """The length of every payload; spooled ones without reading their file."""
    if isinstance(payloads, SpooledParts):
        return payloads.sizes()
    return [len(p) for p in payloads]
