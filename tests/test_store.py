"""The state database on its own: binding, schema, durability settings, the accepted
log's index-backed checks, transactions and clean closing."""

from __future__ import annotations

import random
import sqlite3
import stat
from pathlib import Path

import pytest

from ghostline.errors import StateError
from ghostline.protocol.relaycursor import RelayCursor
from ghostline.state.store import _SCHEMA, _SCHEMA_2, SCHEMA_VERSION, Binding, Store

BINDING = Binding(pad_id=bytes(range(16)), self_index=1, n=3, slice_len=4096, auth_keys=64)


def new_store(tmp_path: Path, binding: Binding = BINDING) -> Store:
    return Store.create(tmp_path / "state.sqlite", binding)


def test_a_new_database_is_private_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    conn = store._c
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.next_position() == (0, 0)
    assert store.relay_cursor() == RelayCursor(None, 0)
    store.close()


def test_closing_removes_the_wal_and_shm_files(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.transaction():
        store.set_next_position(3, 99)
    assert Path(f"{store.path}-wal").exists()
    store.close()
    assert not Path(f"{store.path}-wal").exists()
    assert not Path(f"{store.path}-shm").exists()
    reopened = Store.open(store.path, BINDING)
    assert reopened.next_position() == (3, 99)
    reopened.close()


def test_a_database_of_another_kit_is_refused(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    other_pad = Binding(bytes(16), 1, 3, 4096, 64)
    other_member = Binding(BINDING.pad_id, 2, 3, 4096, 64)
    for binding in (other_pad, other_member):
        with pytest.raises(StateError, match="belongs to another kit"):
            Store.open(tmp_path / "state.sqlite", binding)


def test_creating_over_an_existing_database_is_refused(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    with pytest.raises(StateError, match="already exists"):
        new_store(tmp_path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StateError):
        Store.open(path, BINDING)


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="schema version 99"):
        Store.open(tmp_path / "state.sqlite", BINDING)


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    before = store.dump()
    with pytest.raises(RuntimeError), store.transaction():
        store.set_next_position(5, 500)
        store.add_outbox(0, 0, 10, b"sealed", 1.0)
        raise RuntimeError("boom")
    assert store.dump() == before
    store.close()


def test_overlap_checks_agree_with_brute_force_on_random_ranges(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    rng = random.Random(7)
    accepted: list[tuple[int, int, int]] = []
    with store.transaction():
        offset = 0
        for counter in range(300):
            sender = rng.choice([0, 2])
            length = rng.randint(1, 20)
            offset += rng.randint(0, 15)  # leave gaps
            store.add_accepted(sender, counter, offset, length, counter + 1)
            accepted.append((sender, offset, offset + length))
            offset += length
    for _ in range(3000):
        sender = rng.choice([0, 2])
        start = rng.randint(0, offset + 10)
        end = start + rng.randint(1, 30)
        expected = any(s == sender and a < end and start < b for s, a, b in accepted)
        assert store.overlaps(sender, start, end) == expected
    first_sender = accepted[0][0]
    assert store.has_counter(first_sender, 0)
    assert not store.has_counter(2 - first_sender, 0)
    store.close()


def test_accepted_log_checks_are_index_seeks(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    plan_overlap = " ".join(
        str(r[-1])
        for r in store._c.execute(
            "EXPLAIN QUERY PLAN SELECT offset_end FROM accepted WHERE sender = 0 "
            "AND offset IS NOT NULL AND offset < 10 ORDER BY offset DESC LIMIT 1"
        )
    )
    plan_counter = " ".join(
        str(r[-1])
        for r in store._c.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM accepted WHERE sender = 0 AND counter = 1"
        )
    )
    assert "accepted_ranges" in plan_overlap and "SCAN" not in plan_overlap
    assert "PRIMARY KEY" in plan_counter and "SCAN" not in plan_counter
    store.close()


def test_recovered_counters_without_ranges_still_count_as_accepted(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.transaction():
        store.add_accepted(0, 4, None, None, None)
    assert store.has_counter(0, 4)
    assert not store.overlaps(0, 0, 4096)
    store.close()


def test_history_with_a_limit_returns_the_newest_oldest_first(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.transaction():
        for i in range(5):
            store.add_history(0, i, i + 1, f"p{i}".encode(), float(i), "received")
    assert [h.counter for h in store.history(2)] == [3, 4]
    assert [h.counter for h in store.history()] == [0, 1, 2, 3, 4]
    store.close()


def test_the_relay_cursor_keeps_its_store_and_the_seqs_seen_above_a_hole(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path)
    cursor, _ = RelayCursor(b"s" * 16, 10).settle([12, 15, 2**63 - 1])
    with store.transaction():
        store.set_relay_cursor(cursor)
    store.close()
    store = Store.open(tmp_path / "state.sqlite", BINDING)
    assert store.relay_cursor() == RelayCursor(b"s" * 16, 10, frozenset({12, 15, 2**63 - 1}))
    store.close()


def test_a_damaged_relay_cursor_is_a_state_error(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.transaction() as conn:
        conn.execute("UPDATE relay SET cursor = 5, seen = ?", ((3).to_bytes(8, "big"),))
    with pytest.raises(StateError, match="relay cursor is damaged"):
        store.relay_cursor()
    store.close()


def test_a_read_only_store_refuses_writes_and_leaves_no_files(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    store = Store.open(tmp_path / "state.sqlite", BINDING, read_only=True)
    assert store.next_position() == (0, 0)
    with pytest.raises((StateError, sqlite3.OperationalError)), store.transaction():
        store.set_next_position(1, 1)
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.sqlite"]


def test_history_of_a_kind_reads_the_whole_history_and_can_cut_payloads(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.transaction():
        store.add_history(0, 0, 1, b"\x02header", 1.0, "received")
        for i in range(1, 100):
            store.add_history(0, i, i + 1, b"\x01text", float(i), "received")
        store.add_history(2, 0, 101, b"\x03" + bytes(range(40)), 2.0, "received")
        store.add_history(0, 100, 102, b"\x02later", 3.0, "received")
    before = store.dump()
    assert [(h.counter, h.payload) for h in store.history_starting_with(2)] == [
        (0, b"\x02header"),
        (100, b"\x02later"),
    ]
    [chunk] = store.history_starting_with(3, head=5)
    assert (chunk.sender, chunk.payload) == (2, b"\x03" + bytes(range(4)))
    assert store.history_starting_with(4) == []
    found = store.history_of([(0, 100), (2, 0), (1, 7), (0, 50)])  # (1, 7) does not exist
    assert [(h.sender, h.counter) for h in found] == [(0, 50), (2, 0), (0, 100)]  # oldest first
    assert store.dump() == before  # read-only
    store.close()


def make_schema_1_database(path: Path, binding: Binding = BINDING) -> None:
    """A state database as schema 1 wrote it (its tables are `store._SCHEMA`, unchanged
    since), with three history rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(_SCHEMA)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute(
        "INSERT INTO binding VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            binding.pad_id,
            binding.self_index,
            binding.n,
            binding.slice_len,
            binding.auth_keys,
            0.0,
            "new",
        ),
    )
    conn.execute("INSERT INTO sending VALUES (1, 2, 40)")
    conn.execute("INSERT INTO relay VALUES (1, 3)")
    for counter in range(3):
        conn.execute(
            "INSERT INTO history (sender, counter, seq, payload, recorded_at, state) "
            "VALUES (0, ?, ?, ?, 1.0, 'received')",
            (counter, counter + 1, b"\x02old"),
        )
    conn.close()


def test_a_schema_1_database_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    make_schema_1_database(path)
    store = Store.open(path, BINDING)
    assert store.next_position() == (2, 40)
    assert store.relay_cursor() == RelayCursor(None, 3)  # kept for the first store named
    assert [h.counter for h in store.history()] == [0, 1, 2]
    assert store.saved_files() == []
    # the rows already there predate the record of saved files
    assert store.saves_tracked_after() == max(h.id for h in store.history()) == 3
    with store.transaction():
        store.add_saved_file(0, b"T" * 8, "/d/a.txt", bytes(32), 5.0)
        store.add_history(0, 3, 4, b"\x02new", 2.0, "received")
    assert store.history()[-1].id > store.saves_tracked_after()
    store.close()
    again = Store.open(path, BINDING)  # migrated once: the record stays
    assert again._c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert again.history_keep() is None and again.chat_seen() is None  # as before: kept
    assert again.saves_tracked_after() == 3
    assert [(r.sender, r.transfer_id, r.path) for r in again.saved_files()] == [
        (0, b"T" * 8, "/d/a.txt")
    ]
    again.close()


def test_a_schema_2_database_keeps_its_relay_cursor_for_the_first_store_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite"
    make_schema_1_database(path)
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _SCHEMA_2.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO saves_tracked VALUES (1, 3)")
    conn.execute("UPDATE schema_version SET version = 2")
    conn.close()
    read_only = Store.open(path, BINDING, read_only=True)
    assert read_only.relay_cursor() == RelayCursor(None, 3)
    read_only.close()
    store = Store.open(path, BINDING)
    assert store.relay_cursor() == RelayCursor(None, 3)
    assert store.relay_cursor().for_store(b"A" * 16) == RelayCursor(b"A" * 16, 3)
    assert store.saves_tracked_after() == 3
    store.close()


def test_a_read_only_open_leaves_a_schema_1_database_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    make_schema_1_database(path)
    store = Store.open(path, BINDING, read_only=True)
    assert store.next_position() == (2, 40)
    assert store.relay_cursor() == RelayCursor(None, 3)
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'saved_file'").fetchall() == []
    conn.close()


def test_a_new_database_tracks_every_saved_file(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    assert store.saves_tracked_after() == 0
    with store.transaction():
        store.add_saved_file(2, b"A" * 8, "/d/a.txt", b"\x01" * 32, 1.0)
        store.add_saved_file(2, b"A" * 8, "/d/a (1).txt", b"\x01" * 32, 2.0)  # keeps the first
        store.add_saved_file(1, b"A" * 8, "/d/b.txt", b"\x02" * 32, 3.0)
    assert [(r.sender, r.path, r.saved_at) for r in store.saved_files()] == [
        (2, "/d/a.txt", 1.0),
        (1, "/d/b.txt", 3.0),
    ]
    store.close()
