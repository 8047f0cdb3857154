"""Splitting a file (or bytes) into the FILE_HEADER and FILE_CHUNK payloads that send
it (docs/PROTOCOL.md section 7). Reads the file; the payload codec is
`protocol.payload`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..protocol.payload import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    FileChunk,
    FileHeader,
    chunk_count_for,
)


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
    header = file_header(total, digest, chunk_size, transfer_id=transfer_id, sent_at=sent_at,
                         name=name)  # fmt: skip
    parts = (FileChunk(transfer_id, i, c, sent_at) for i, c in enumerate(chunks))
    return header, parts


def file_header(
    total: int, digest: bytes, chunk_size: int, *, transfer_id: bytes, sent_at: int, name: str
) -> FileHeader:
    """The FILE_HEADER of a file of `total` bytes whose SHA-256 is `digest`."""
    count = chunk_count_for(total, chunk_size)
    return FileHeader(transfer_id, total, chunk_size, count, digest, name, sent_at)


def hash_stream(f: BinaryIO) -> tuple[int, bytes]:
    """The length and SHA-256 of what is left to read in `f`, read 1 MiB at a time."""
    h = hashlib.sha256()
    total = 0
    while block := f.read(1 << 20):
        h.update(block)
        total += len(block)
    return total, h.digest()


def _hash_file(path: Path) -> tuple[int, bytes]:
    with path.open("rb") as f:
        return hash_stream(f)


def _read_chunks(path: Path, chunk_size: int, total: int) -> Iterator[bytes]:
    left = total
    with path.open("rb") as f:
        while left > 0:
            block = f.read(min(chunk_size, left))
            if not block:
                return  # the file shrank; the receiver's length check catches it
            left -= len(block)
            yield block
