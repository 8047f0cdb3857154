"""The file sender cuts its parts into commits by both limits of state/limits.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from ghostline.files import OutgoingFile, send_file, split_file
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
