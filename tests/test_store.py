"""The state database on its own: binding, layout, durability settings, the accepted
log's index-backed checks, transactions and clean closing. (Its history tables:
test_state_history.py.)"""

from __future__ import annotations

import random
import sqlite3
import stat
from pathlib import Path

import pytest

from ghostline.errors import OldStateLayout, StateError, StateOfAnotherKit
from ghostline.protocol.relaycursor import RelayCursor
from ghostline.state.database import LAYOUT, Binding
from ghostline.state.store import Store
from helpers import state_rows

BINDING = Binding(pad_id=bytes(range(16)), self_index=1, n=3, slice_len=4096, auth_keys=64)


def new_store(tmp_path: Path, binding: Binding = BINDING) -> Store:
    return Store.create(tmp_path / "state.sqlite", binding)


def test_a_new_database_is_private_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    conn = store.db._live()
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
        with pytest.raises(StateOfAnotherKit, match="belongs to another kit"):
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


def test_a_layout_newer_than_this_ghostline_is_refused(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="state layout 99") as err:
        Store.open(tmp_path / "state.sqlite", BINDING)
    assert not isinstance(err.value, OldStateLayout)  # recovery would not help


@pytest.mark.parametrize("read_only", [False, True])
def test_a_database_of_an_older_layout_is_refused_and_left_as_it_is(
    tmp_path: Path, read_only: bool
) -> None:
    """No release has shipped: an older layout is not migrated but refused, with a typed
    error the CLI turns into `pad recover` and its cost."""
    new_store(tmp_path).close()
    path = tmp_path / "state.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 4")
    conn.commit()
    conn.close()
    before = state_rows(path)
    with pytest.raises(OldStateLayout) as err:
        Store.open(path, BINDING, read_only=read_only)
    assert (err.value.state_path, err.value.version, err.value.current) == (str(path), 4, LAYOUT)
    assert state_rows(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.sqlite"]


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    before = state_rows(store.path)
    with pytest.raises(RuntimeError), store.transaction():
        store.set_next_position(5, 500)
        store.add_outbox(0, 0, 10, b"sealed", 1.0)
        raise RuntimeError("boom")
    assert state_rows(store.path) == before
    assert store.next_position() == (0, 0)
    store.close()


def test_a_write_outside_a_transaction_is_refused(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with pytest.raises(RuntimeError, match="outside a transaction"):
        store.set_next_position(5, 500)
    assert store.next_position() == (0, 0)
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
        for r in store.db.all(
            "EXPLAIN QUERY PLAN SELECT offset_end FROM accepted WHERE sender = 0 "
            "AND offset IS NOT NULL AND offset < 10 ORDER BY offset DESC LIMIT 1"
        )
    )
    plan_counter = " ".join(
        str(r[-1])
        for r in store.db.all(
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
    with store.transaction():
        store.db.execute("UPDATE relay SET cursor = 5, seen = ?", ((3).to_bytes(8, "big"),))
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
