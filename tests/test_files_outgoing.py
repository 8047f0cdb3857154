"""The file sender cuts its parts into commits by both limits of state/limits.py, reads a
file from disk a group at a time, and never seals a file that changed as a mix."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

from ghostline.errors import FileChanged
from ghostline.files import OutgoingFile, prepare_file, send_file, split_file
from ghostline.files.spooled import SpooledParts
from ghostline.protocol.payload import FileChunk, decode
from ghostline.state.limits import MAX_SEAL_BYTES, MAX_SEAL_GROUP


class RecordingSender:
    """Hands out consecutive counters and remembers each group it was asked to seal."""

    def __init__(self) -> None:
        self.groups: list[list[bytes]] = []

    async def send_many(self, payloads: Sequence[bytes]) -> list[object]:
        first = sum(len(g) for g in self.groups)
        self.groups.append(list(payloads))
        return [type("Entry", (), {"counter": first + i})() for i in range(len(payloads))]


def outgoing(tmp_path: Path, size: int, chunk_size: int) -> OutgoingFile:
    source = tmp_path / "data.bin"
    source.write_bytes(bytes(range(256)) * (size // 256))
    header, chunks = split_file(source, chunk_size, transfer_id=b"t" * 8, sent_at=1)
    return OutgoingFile(source, header, [header.encode(), *(c.encode() for c in chunks)])


def test_default_size_parts_go_thirty_two_to_a_commit(tmp_path: Path) -> None:
    sender = RecordingSender()
    out = outgoing(tmp_path, 70 * 65536, 65536)  # a header and 70 parts
    asyncio.run(send_file(sender, out))
    assert [len(g) for g in sender.groups] == [32, 32, 7]
    assert out.counters == set(range(71))


def test_large_parts_are_cut_by_the_bytes_one_commit_may_hold(tmp_path: Path) -> None:
    sender = RecordingSender()
    out = outgoing(tmp_path, 20 * 300 * 1024, 300 * 1024)  # a header and 20 parts of 300 KiB
    asyncio.run(send_file(sender, out))
    sizes = [sum(len(p) for p in g) for g in sender.groups]
    assert max(sizes) <= MAX_SEAL_BYTES
    assert all(len(g) < MAX_SEAL_GROUP for g in sender.groups)
    # The header and 7 parts, then 7 parts at a time: 8 parts would be 2.4 MiB.
    assert [len(g) for g in sender.groups] == [8, 7, 6]
    assert [p for g in sender.groups for p in g] == out.payloads  # every part, in order


class HashingSender(RecordingSender):
    """Keeps no payload: hashes the file's bytes as its chunks arrive, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = hashlib.sha256()
        self.chunks: list[int] = []  # the index of every chunk sealed
        self.sealed = 0

    async def send_many(self, payloads: Sequence[bytes]) -> list[object]:
        for payload in payloads:
            part = decode(payload)
            if isinstance(part, FileChunk):
                self.hash.update(part.data)
                self.chunks.append(part.index)
        first = self.sealed
        self.sealed += len(payloads)
        return [type("Entry", (), {"counter": first + i})() for i in range(len(payloads))]


def test_a_large_file_is_sealed_a_group_at_a_time_never_read_whole(tmp_path: Path) -> None:
    size = 24 << 20  # 384 parts of 64 KiB: 12 seal groups
    source = tmp_path / "big.bin"
    with source.open("wb") as f:
        for i in range(size >> 20):
            f.write(hashlib.sha256(bytes([i])).digest() * (1 << 15))  # 1 MiB, all differ
    sender = HashingSender()
    tracemalloc.start()
    try:
        out = prepare_file(source, transfer_id=b"b" * 8, sent_at=1)
        assert isinstance(out.payloads, SpooledParts)  # lazy: nothing read yet
        asyncio.run(send_file(sender, out))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One group is 32 parts of 64 KiB (2 MiB); reading the file in took 24 MiB and more.
    assert peak < 8 << 20, f"sending a {size} B file took {peak} B of memory"
    assert sender.chunks == list(range(size >> 16))
    assert sender.hash.digest() == out.header.sha256 == hashlib.sha256(source.read_bytes()).digest()


def test_a_file_changed_after_it_was_hashed_is_refused_before_the_next_group(
    tmp_path: Path,
) -> None:
    source = tmp_path / "draft.txt"
    size = 70 * 65536  # a header and 70 parts: groups of 32, 32 and 7
    source.write_bytes(b"a" * size)
    out = prepare_file(source, transfer_id=b"c" * 8, sent_at=1)
    sender = HashingSender()

    async def edit_after_the_first_group() -> None:
        first = sender.send_many

        async def send_many(payloads: Sequence[bytes]) -> list[object]:
            entries = await first(payloads)
            if len(entries) == sender.sealed:
                source.write_bytes(b"b" * size)  # same size, new contents, a later mtime:
                later = source.stat().st_mtime_ns + 10**9  # (a clock tick may be coarse)
                os.utime(source, ns=(later, later))
            return entries

        sender.send_many = send_many  # type: ignore[method-assign]
        await send_file(sender, out)

    with pytest.raises(FileChanged, match="draft.txt changed after it was read"):
        asyncio.run(edit_after_the_first_group())
    # The first group only: stopped before reading the second, nothing of the new file.
    assert sender.chunks == list(range(31))


def test_a_change_the_file_system_does_not_show_stops_before_the_last_part(
    tmp_path: Path,
) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"a" * (40 * 65536))
    out = prepare_file(source, transfer_id=b"d" * 8, sent_at=1)
    assert isinstance(out.payloads, SpooledParts)
    # What the header says was hashed differs from the file, which the stamp still fits:
    # as a write inside one clock tick of the hashing would leave it.
    other = split_file(b"b" * (40 * 65536), transfer_id=b"d" * 8, sent_at=1, name="notes.txt")[0]
    out.payloads = SpooledParts(source, other, out.payloads.stamp)
    out.header = other
    sender = HashingSender()
    with pytest.raises(FileChanged, match="notes.txt changed after it was read"):
        asyncio.run(send_file(sender, out))
    assert sender.chunks == list(range(31))  # the last group, with the last part, is not sealed
    assert other.chunk_count - 1 not in sender.chunks


def test_a_file_that_grows_or_is_replaced_is_refused(tmp_path: Path) -> None:
    for change in ("append", "replace"):
        source = tmp_path / f"{change}.bin"
        source.write_bytes(b"x" * 100_000)
        out = prepare_file(source, transfer_id=b"e" * 8, sent_at=1)
        if change == "append":
            with source.open("ab") as f:
                f.write(b"y")
        else:
            (tmp_path / "new.bin").write_bytes(b"x" * 100_000)  # the same bytes, another file
            (tmp_path / "new.bin").replace(source)
        sender = HashingSender()
        with pytest.raises(FileChanged):
            asyncio.run(send_file(sender, out))
        assert sender.sealed == 0, change
