"""The single-node backend on its own: numbering, dedupe, paging, retention, reopen."""

from __future__ import annotations

import sqlite3

import pytest

from ghostline.relay import Publish, Retention, RoomLimitReached, SqliteBackend

ROOM = b"r" * 16
ROSTER = (b"a" * 32, b"b" * 32)


async def open_store(path, retention=None) -> SqliteBackend:
    store = SqliteBackend(path, retention)
    await store.open(None)  # type: ignore[arg-type]
    await store.bind_roster(ROOM, ROSTER, max_rooms=10)
    return store


def pub(sender: int, counter: int, size: int = 10) -> Publish:
    return Publish(ROOM, sender, counter, bytes([counter % 256]) * size)


async def test_numbering_dedupe_and_reopen(tmp_path):
    store = await open_store(tmp_path / "s.sqlite")
    got = await store.append([pub(0, 0), pub(1, 0), pub(0, 0), pub(0, 1)])
    assert [(a.seq, a.duplicate) for a in got] == [(1, False), (2, False), (1, True), (3, False)]
    got = await store.append([pub(1, 0), pub(1, 1)])
    assert [(a.seq, a.duplicate) for a in got] == [(2, True), (4, False)]
    await store.close()
    store = await open_store(tmp_path / "s.sqlite")
    assert await store.head(ROOM) == 4
    assert [(a.seq, a.duplicate) for a in await store.append([pub(0, 1), pub(0, 2)])] == [
        (3, True),
        (5, False),
    ]
    page = await store.read_after(ROOM, 1, limit=2)
    assert [m.seq for m in page] == [2, 3]
    assert [m.seq for m in await store.read_after(ROOM, 3, limit=100, max_bytes=15)] == [4, 5]
    assert [m.seq for m in await store.read_after(ROOM, 3, limit=100, max_bytes=5)] == [4]
    await store.close()


async def test_the_room_limit_refuses_new_rooms_only(tmp_path):
    store = await open_store(tmp_path / "s.sqlite")
    assert await store.bind_roster(ROOM, (b"x" * 32,) * 2, max_rooms=1) == ROSTER
    with pytest.raises(RoomLimitReached):
        await store.bind_roster(b"q" * 16, ROSTER, max_rooms=1)
    await store.close()


async def test_retention_bookkeeping_matches_the_file_after_reopen(tmp_path):
    path = tmp_path / "s.sqlite"
    store = await open_store(path, Retention(max_messages=50, max_bytes=300))
    for start in range(0, 100, 7):
        await store.append([pub(0, c, size=1 + c % 13) for c in range(start, min(start + 7, 100))])
    rows = (
        sqlite3.connect(path)
        .execute("SELECT MIN(seq), MAX(seq), COUNT(*), SUM(LENGTH(sealed)) FROM messages")
        .fetchone()
    )
    low, high, count, size = rows
    assert high == 100 and count == high - low + 1 and count <= 50 and size <= 300
    await store.close()
    store = await open_store(path, Retention(max_messages=10, max_bytes=300))
    await store.append([pub(1, 0)])
    low, count = sqlite3.connect(path).execute("SELECT MIN(seq), COUNT(*) FROM messages").fetchone()
    assert (low, count) == (92, 10)
    await store.close()
