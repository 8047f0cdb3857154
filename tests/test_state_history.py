"""The history tables of the state database on their own: relay order, reading by kind
and by key, saved-file records and what deleting keeps."""

from __future__ import annotations

from pathlib import Path

from ghostline.protocol.relaycursor import RelayCursor
from ghostline.state.database import Binding, Database
from ghostline.state.history import History
from ghostline.state.store import Store
from helpers import state_rows

BINDING = Binding(pad_id=bytes(range(16)), self_index=1, n=3, slice_len=4096, auth_keys=64)
NAMES = ["ann", "ben", "cat"]


def new_history(tmp_path: Path) -> History:
    return History(Database.create(tmp_path / "state.sqlite", BINDING), NAMES)


def test_history_with_a_limit_returns_the_newest_oldest_first(tmp_path: Path) -> None:
    history = new_history(tmp_path)
    with history.db.transaction():
        for i in range(5):
            history.record(0, i, i + 1, f"p{i}".encode(), float(i), "received")
    assert [h.counter for h in history.page(2)] == [3, 4]
    assert [h.counter for h in history.page()] == [0, 1, 2, 3, 4]
    assert {h.sender_name for h in history.page()} == {"ann"}
    history.db.close()


def test_a_new_relay_store_comes_after_the_old_one_whatever_its_seqs(tmp_path: Path) -> None:
    history = new_history(tmp_path)
    with history.db.transaction():
        history.record(0, 0, 7, b"\x01old", 1.0, "received")
        history.record(1, 0, None, b"\x01mine", 2.0, "sealed")
        Store(history.db).set_relay_cursor(RelayCursor(b"another store id"), new_epoch=True)
        history.record(2, 0, 1, b"\x01new", 3.0, "received")
        history.mark_stored(0, 2)  # own message 0 stored in the new store as seq 2
    assert [(h.sender, h.seq, h.state) for h in history.page()] == [
        (0, 7, "received"),
        (2, 1, "received"),
        (1, 2, "stored"),
    ]
    history.db.close()


def test_history_of_a_kind_reads_the_whole_history_and_can_cut_payloads(tmp_path: Path) -> None:
    history = new_history(tmp_path)
    with history.db.transaction():
        history.record(0, 0, 1, b"\x02header", 1.0, "received")
        for i in range(1, 100):
            history.record(0, i, i + 1, b"\x01text", float(i), "received")
        history.record(2, 0, 101, b"\x03" + bytes(range(40)), 2.0, "received")
        history.record(0, 100, 102, b"\x02later", 3.0, "received")
    before = state_rows(history.db.path)
    assert [(h.counter, h.payload) for h in history.of_kind(2)] == [
        (0, b"\x02header"),
        (100, b"\x02later"),
    ]
    [chunk] = history.of_kind(3, head=5)
    assert (chunk.sender, chunk.payload) == (2, b"\x03" + bytes(range(4)))
    assert history.of_kind(4) == []
    found = history.of([(0, 100), (2, 0), (1, 7), (0, 50)])  # (1, 7) does not exist
    assert [(h.sender, h.counter) for h in found] == [(0, 50), (2, 0), (0, 100)]  # oldest first
    assert state_rows(history.db.path) == before  # read-only
    history.db.close()


def test_a_saved_file_is_recorded_once_and_releases_its_held_parts(tmp_path: Path) -> None:
    history = new_history(tmp_path)
    part = b"\x03" + bytes(4) + b"T" * 8 + b"data"  # a FILE_CHUNK of transfer TTTTTTTT
    with history.db.transaction():
        history.record(0, 0, 1, part, 1.0, "received")
        history.record(0, 1, 2, b"\x01text", 1.0, "received")
        history.set_keep(0)  # history off: only the part is held, until its file is saved
        assert history.delete() == 1
    assert [h.counter for h in history.page()] == [0]
    with history.db.transaction():
        history.add_saved_file(0, b"T" * 8, "/d/a.txt", b"\x01" * 32, 1.0)
        history.add_saved_file(0, b"T" * 8, "/d/a (1).txt", b"\x01" * 32, 2.0)  # keeps the first
        history.add_saved_file(2, b"U" * 8, "/d/b.txt", b"\x02" * 32, 3.0)
    assert history.saved_files().records == {
        (0, b"T" * 8): Path("/d/a.txt"),
        (2, b"U" * 8): Path("/d/b.txt"),
    }
    with history.db.transaction():
        assert history.expire(10.0, saved=True) == 1
    assert history.page() == []
    history.db.close()
