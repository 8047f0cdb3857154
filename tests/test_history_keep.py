"""How long a member keeps its history, and that deleted history is really gone.

Real kits, real members, real SQLite files; "gone" means the plaintext's bytes are in
neither the database file nor its write-ahead log, read raw from disk.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from ghostline.files import scan_file_history, split_file
from ghostline.protocol.payload import encode_text
from ghostline.state.member import DAY, Member
from helpers import make_kit_set

SECRET = "meet at the north gate"


def state_bytes(member: Member) -> bytes:
    """The raw bytes of the state database and of its write-ahead log, as on disk."""
    path = member.state_path
    wal = Path(f"{path}-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def pair(tmp_path: Path) -> tuple[Member, Member]:
    alice, bob = make_kit_set(tmp_path / "kits", ["alice", "bob"], slice_len=1 << 18)
    return Member.open(alice), Member.open(bob)


def exchange(sender: Member, receiver: Member, texts: list[str], first_seq: int) -> None:
    for seq, text in enumerate(texts, start=first_seq):
        sealed = sender.seal(encode_text(text, int(time.time())))
        assert receiver.receive(seq, sealed.sealed) is not None


def age(member: Member, days: float) -> None:
    """Make every history row `days` days older, through a second connection."""
    conn = sqlite3.connect(member.state_path)
    with conn:
        conn.execute("UPDATE history SET recorded_at = recorded_at - ?", (days * DAY,))
    conn.close()


def file_parts(data: bytes, tid: bytes) -> list[bytes]:
    head, chunks = split_file(data, 4096, transfer_id=tid, sent_at=1, name="plan.txt")
    return [head.encode(), *(c.encode() for c in chunks)]


def test_history_is_kept_for_ever_by_default(tmp_path: Path) -> None:
    alice, bob = pair(tmp_path)
    with alice, bob:
        assert alice.history_keep is None
        exchange(bob, alice, [SECRET], 1)
        age(alice, 3650)
    with Member.open(alice.kit.path) as again:
        assert len(again.history()) == 1


def test_a_cleared_history_leaves_no_plaintext_in_the_database_files(tmp_path: Path) -> None:
    alice, bob = pair(tmp_path)
    with alice, bob:
        exchange(bob, alice, [f"{SECRET} {i}" for i in range(40)], 1)
        exchange(alice, bob, [f"{SECRET} reply"], 41)
        assert SECRET.encode() in state_bytes(alice)  # else this test would prove nothing
        done = alice.clear_history()
        assert (done.count, done.left, done.checkpointed) == (41, 0, True)
        assert alice.history() == []
        assert SECRET.encode() not in state_bytes(alice)
        # The member goes on working: new messages are kept again (the setting is "keep").
        exchange(bob, alice, ["after the clear"], 42)
        assert [h.payload[5:] for h in alice.history()] == [b"after the clear"]


def test_expired_history_is_deleted_on_open_and_leaves_no_plaintext(tmp_path: Path) -> None:
    alice, bob = pair(tmp_path)
    with alice:
        assert alice.set_history_keep(30).count == 0
        exchange(bob, alice, [f"{SECRET} {i}" for i in range(5)], 1)
    age(alice, 31)
    with bob, Member.open(alice.kit.path) as again:
        assert again.history_keep == 30
        assert again.history() == []
        assert SECRET.encode() not in state_bytes(again)
        exchange(bob, again, ["fresh"], 6)
        assert len(again.history()) == 1


def test_history_expires_with_each_commit_while_the_member_is_open(tmp_path: Path) -> None:
    alice, bob = pair(tmp_path)
    with alice, bob:
        alice.set_history_keep(7)
        exchange(bob, alice, [f"{SECRET} old"], 1)
        age(alice, 8)
        exchange(bob, alice, ["new"], 2)  # this commit deletes the expired one
        assert [h.payload[5:] for h in alice.history()] == [b"new"]
        assert SECRET.encode() not in state_bytes(alice)


def test_keeping_fewer_days_deletes_what_is_older_at_once(tmp_path: Path) -> None:
    alice, bob = pair(tmp_path)
    with alice, bob:
        exchange(bob, alice, [f"{SECRET} old"], 1)
        age(alice, 10)
        exchange(bob, alice, ["recent"], 2)
        assert alice.history_to_delete(5) == 1 and alice.history_to_delete(None) == 0
        done = alice.set_history_keep(5)
        assert (done.count, done.left) == (1, 1)
        assert SECRET.encode() not in state_bytes(alice)


def test_with_history_off_nothing_new_is_recorded(tmp_path: Path) -> None:
    alice, bob = pair(tmp_path)
    with alice, bob:
        exchange(bob, alice, ["kept from before"], 1)
        done = alice.set_history_keep(0)
        assert (done.count, done.left) == (1, 0)
        exchange(bob, alice, [f"{SECRET} in"], 2)
        exchange(alice, bob, [f"{SECRET} out"], 3)
        assert alice.history() == []
        assert SECRET.encode() not in state_bytes(alice)
        assert alice.relay_cursor == 2  # receiving itself is unchanged
        assert alice.accepted_seq(0) is None  # sealed, not yet accepted
        alice.mark_accepted(0, 3)
        assert alice.accepted_seq(0) == 3  # from the outbox, not the history


def test_with_history_off_an_incoming_file_finishes_after_a_reopen_then_goes(
    tmp_path: Path,
) -> None:
    data = (SECRET.encode() + b" / ") * 1000  # three parts of 4 KiB
    parts = file_parts(data, b"T" * 8)
    alice, bob = pair(tmp_path)
    sealed = [e.sealed for e in bob.seal_many(parts)]
    with alice:
        alice.set_history_keep(0)
        for seq, blob in enumerate(sealed[:2], start=1):  # the header and one chunk
            alice.receive(seq, blob)
    age(alice, 400)
    with bob, Member.open(alice.kit.path) as again:
        found = scan_file_history(again, again.index)  # what the chat app does on opening
        assert len(found.incoming) == 2 and not found.complete
        for seq, blob in enumerate(sealed[2:], start=3):
            again.receive(seq, blob)
        found = scan_file_history(again, again.index)
        assert found.unsaved == {(1, b"T" * 8)}
        assert SECRET.encode() in state_bytes(again)  # kept until saved
        again.record_saved_file(1, b"T" * 8, tmp_path / "plan.txt", bytes(32))
        assert again.history() == []
        assert SECRET.encode() not in state_bytes(again)
        assert list(again.saved_files().records) == [(1, b"T" * 8)]  # the record stays


def test_a_clear_keeps_the_parts_of_a_file_not_yet_saved(tmp_path: Path) -> None:
    parts = file_parts(b"x" * 9000, b"U" * 8)
    alice, bob = pair(tmp_path)
    with alice, bob:
        exchange(bob, alice, [SECRET], 1)
        for seq, entry in enumerate(bob.seal_many(parts[:2]), start=2):
            alice.receive(seq, entry.sealed)
        done = alice.clear_history()
        assert (done.count, done.left) == (1, 2)
        assert [h.counter for h in alice.history()] == [1, 2]


def test_a_clear_while_another_process_reads_says_the_log_is_not_yet_truncated(
    tmp_path: Path,
) -> None:
    alice, bob = pair(tmp_path)
    with alice, bob:
        exchange(bob, alice, [SECRET], 1)
        reader = sqlite3.connect(alice.state_path)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM history").fetchone()  # holds a snapshot
        alice.store._c.execute("PRAGMA busy_timeout = 50")  # do not wait 30 s for it
        done = alice.clear_history()
        assert done.count == 1 and not done.checkpointed
        reader.rollback()
        reader.close()
        assert alice.store.checkpoint()
        assert SECRET.encode() not in state_bytes(alice)


def test_a_negative_number_of_days_is_refused(tmp_path: Path) -> None:
    alice, bob = pair(tmp_path)
    with alice, bob, pytest.raises(ValueError):
        alice.set_history_keep(-1)


def test_history_is_in_relay_order_and_a_new_relay_store_comes_after_the_old_one(
    tmp_path: Path,
) -> None:
    alice, bob = pair(tmp_path)
    with alice, bob:
        alice.enter_relay_store(b"A" * 16)
        mine = alice.seal(encode_text("mine, sealed offline", 1))
        exchange(bob, alice, ["older, caught up"], 7)  # stored before mine
        assert [h.payload[5:] for h in alice.history()] == [
            b"older, caught up",
            b"mine, sealed offline",  # no seq yet: last
        ]
        alice.mark_accepted(mine.counter, 8)
        alice.enter_relay_store(b"B" * 16)  # a new store: its seqs start again from 1
        exchange(bob, alice, ["on the new store"], 1)
        texts = [h.payload[5:] for h in alice.history()]
        assert texts == [b"older, caught up", b"mine, sealed offline", b"on the new store"]
        newest = alice.history(limit=1)
        assert [h.payload[5:] for h in alice.history(2, before=newest[0])] == texts[:2]
