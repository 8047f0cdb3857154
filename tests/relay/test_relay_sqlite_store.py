"""The single-node backend on its own: numbering, dedupe, paging, retention, reopen."""

from __future__ import annotations

import os
import random
import sqlite3
import struct

import pytest

from ghostline.relay import Publish, Retention, RoomLimitReached, SqliteBackend
from ghostline.relay.sqlite_schema import LAYOUT
from ghostline.relay.storefile import StoreLayoutError, StoreLocked, lock_store, unlock_store

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
    low, high, count, size = stored(path)
    assert high == 100 and count == high - low + 1 and count <= 50 and size <= 300
    await store.close()
    store = await open_store(path, Retention(max_messages=10, max_bytes=300))
    await store.append([pub(1, 0)])
    low, _, count, _ = stored(path)
    assert (low, count) == (92, 10)
    await store.close()


def stored(path) -> tuple[int, int, int, int]:
    """What the file itself holds: lowest and highest seq, message count, sealed bytes
    (read from the layout directly, not through the store's bookkeeping)."""
    db = sqlite3.connect(path)
    seqs, size = [], 0
    for key, first, sizes, data in db.execute("SELECT key, first, sizes, data FROM chunks"):
        lengths = struct.unpack(f">{len(sizes) // 4}I", sizes)
        assert sum(lengths) == len(data)
        seqs += range(first, (key & (2**40 - 1)) + 1)
        assert len(lengths) == (key & (2**40 - 1)) - first + 1
        size += len(data)
    # every stored (sender, counter) is in the dedupe index, and nothing else is
    index = db.execute("SELECT COUNT(*) FROM senders s JOIN chunks c ON c.key = s.chunk")
    assert index.fetchone()[0] == db.execute("SELECT COUNT(*) FROM senders").fetchone()[0]
    db.close()
    return min(seqs), max(seqs), len(seqs), size


async def test_dedupe_is_exact_out_of_order_and_after_trimming(tmp_path):
    path = tmp_path / "s.sqlite"
    store = await open_store(path, Retention(max_messages=6, max_bytes=10**6))
    got = await store.append([pub(0, 5), pub(0, 3), pub(0, 5), pub(1, 2**64 - 1)])
    assert [(a.seq, a.duplicate) for a in got] == [(1, False), (2, False), (1, True), (3, False)]
    await store.close()
    store = await open_store(path, Retention(max_messages=6, max_bytes=10**6))
    got = await store.append([pub(0, 4), pub(0, 3), pub(1, 2**64 - 1), pub(0, 4), pub(0, 6)])
    assert [(a.seq, a.duplicate) for a in got] == [
        (4, False), (2, True), (3, True), (4, True), (5, False),
    ]  # fmt: skip
    # seqs 1..5 held; three more push 1 and 2 out: (0, 5) and (0, 3) are new again
    await store.append([pub(2, 0), pub(2, 1), pub(2, 2)])
    got = await store.append([pub(0, 5), pub(0, 3), pub(0, 4)])
    assert [(a.seq, a.duplicate) for a in got] == [(9, False), (10, False), (4, True)]
    assert stored(path)[:3] == (5, 10, 6)
    assert [m.seq for m in await store.read_after(ROOM, 0)] == [5, 6, 7, 8, 9, 10]
    await store.close()


@pytest.mark.parametrize("layout", [1, 2, 3, 5])
async def test_a_store_of_another_layout_is_refused_and_left_as_it_was(tmp_path, layout):
    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path)
    db.executescript(f"CREATE TABLE rooms (id INTEGER PRIMARY KEY); PRAGMA user_version={layout};")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreLayoutError) as refused:
        await SqliteBackend(path).open(None)  # type: ignore[arg-type]
    assert (refused.value.found, refused.value.expected) == (layout, LAYOUT)
    assert path.read_bytes() == before
    # and the refusal let go of the store: a relay of the right layout could take it
    fd = lock_store(path)
    unlock_store(fd)


async def test_an_sqlite_file_that_is_not_a_relay_store_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE notes (text TEXT);")
    db.close()
    with pytest.raises(StoreLayoutError) as refused:
        await SqliteBackend(path).open(None)  # type: ignore[arg-type]
    assert refused.value.found == 0


async def test_a_second_backend_on_the_same_store_is_refused_with_the_holders_pid(tmp_path):
    first = await open_store(tmp_path / "s.sqlite")
    with pytest.raises(StoreLocked) as refused:
        await SqliteBackend(tmp_path / "s.sqlite").open(None)  # type: ignore[arg-type]
    assert refused.value.pid == os.getpid()
    await first.close()
    second = await open_store(tmp_path / "s.sqlite")  # closed: free again
    await second.close()


@pytest.mark.parametrize("link", ["symbolic", "hard"])
async def test_the_same_store_under_another_name_is_refused_too(tmp_path, link):
    store = tmp_path / "s.sqlite"
    first = await open_store(store)
    other = tmp_path / "elsewhere" / "alias.sqlite"
    other.parent.mkdir()
    if link == "symbolic":
        other.symlink_to(store)
    else:
        os.link(store, other)
    with pytest.raises(StoreLocked):
        await SqliteBackend(other).open(None)  # type: ignore[arg-type]
    await first.close()
    second = await open_store(other)  # the first is gone: the alias may take it now
    await second.close()


async def test_random_batches_number_and_dedupe_as_a_plain_model_does(tmp_path):
    # Batches as the relay makes them: runs of one sender's publishes, mostly counting
    # up (each run numbered at once), with resends, repeats inside a run and counters
    # that go down mixed in (checked one by one). A dict is the model.
    seed = int.from_bytes(os.urandom(4), "big")
    print("seed", seed)
    rng = random.Random(seed)
    path = tmp_path / "s.sqlite"
    store = await open_store(path)
    model: dict[tuple[int, int], int] = {}
    next_counter = [0, 0, 0]
    for _ in range(60):
        batch = []
        for _ in range(rng.randint(1, 6)):
            sender = rng.randrange(3)
            if rng.random() < 0.7:  # a fresh run, counting up (perhaps with gaps, repeats)
                counters = []
                for _ in range(rng.randint(1, 12)):
                    next_counter[sender] += rng.choice((0, 1, 1, 1, 2, 5))
                    counters.append(next_counter[sender])
            else:  # resends (often of the highest so far), repeats, counters out of order
                top = next_counter[sender]
                counters = [rng.randint(0, top + 3) for _ in range(rng.randint(1, 8))]
                counters[0] = rng.choice((top, top, counters[0]))
                next_counter[sender] = max(next_counter[sender], *counters)
            batch += [pub(sender, c, size=1 + c % 7) for c in counters]
        want = []
        for p in batch:
            key = (p.sender, p.counter)
            held = key in model
            if not held:
                model[key] = len(model) + 1
            want.append((model[key], held))
        got = await store.append(batch)
        assert [(a.seq, a.duplicate) for a in got] == want
        if rng.random() < 0.1:
            await store.close()
            store = await open_store(path)
    by_seq = {seq: key for key, seq in model.items()}
    stored_messages = await store.read_after(ROOM, 0, limit=10**6, max_bytes=10**9)
    assert [m.seq for m in stored_messages] == sorted(by_seq)
    assert all(m.sealed == pub(*by_seq[m.seq], size=1 + by_seq[m.seq][1] % 7).sealed
               for m in stored_messages)  # fmt: skip
    await store.close()
    # the dedupe index holds, per chunk and sender, exactly its lowest and highest counter
    db = sqlite3.connect(path)
    index = {(s, chunk): (lo, hi) for s, hi, lo, chunk in db.execute(
        "SELECT sender, hi, lo, chunk FROM senders")}  # fmt: skip
    expected = {}
    for key, senders, counters in db.execute("SELECT key, senders, counters FROM chunks"):
        ss = struct.unpack(f">{len(senders) // 2}H", senders)
        cs = struct.unpack(f">{len(counters) // 8}Q", counters)
        for s in set(ss):
            mine = [c - 2**63 for c, x in zip(cs, ss, strict=True) if x == s]
            expected[(s, key)] = (min(mine), max(mine))
    db.close()
    assert index == expected
