"""Damage on disk inside stored messages (which SQLite's integrity check cannot see):
checksums per message and per chunk; what was received is served, or nothing is. A
room's row read back out of range: the store (or that room's join) is refused. And a
sender's top in the index of resends that is no counter: its resends are still found."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest

from ghostline.relay import Publish, Retention, SqliteBackend
from ghostline.relay.sqlite_schema import BIAS
from ghostline.relay.storeadmin import restore_store
from ghostline.relay.storefile import StoreDamaged

ROOM = b"d" * 16
ROSTER = (b"a" * 32, b"b" * 32)


async def open_store(path, retention=None) -> SqliteBackend:
    store = SqliteBackend(path, retention)
    await store.open(None)  # type: ignore[arg-type]
    await store.bind_roster(ROOM, ROSTER, max_rooms=10)
    return store


def body(seq: int) -> bytes:
    return f"<message {seq:04d} of the damage test>".encode() * 4


def flip_byte_of(path, needle: bytes) -> None:
    """Flip one bit in the middle of the only copy of `needle` in the file."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "the message is in the file exactly once"
    data[at + len(needle) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def damage_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=store_damaged" in r.getMessage()]


async def test_a_flipped_bit_inside_a_message_is_never_served_and_logged_once(tmp_path, caplog):
    path = tmp_path / "s.sqlite"
    store = await open_store(path)
    for seq in range(1, 5):  # one commit, one chunk, per message
        await store.append([Publish(ROOM, 0, seq, body(seq))])
    await store.close()  # the last connection out checkpoints: everything is in the file
    flip_byte_of(path, body(2))

    caplog.set_level(logging.INFO, logger="ghostline.relay")
    store = await open_store(path)  # SQLite's integrity check does not see it
    first = await store.read_after(ROOM, 0)
    assert [(m.seq, m.sealed) for m in first] == [(s, body(s)) for s in (1, 3, 4)]
    again = await store.read_after(ROOM, 0)  # another member catching up
    assert [m.seq for m in again] == [1, 3, 4]
    lines = damage_lines(caplog)
    assert len(lines) == 1, lines
    assert f"room={ROOM.hex()}" in lines[0] and "seqs=2 " in lines[0]
    assert await store.head(ROOM) == 4  # the numbering does not move
    await store.close()


async def test_a_message_in_a_damaged_chunk_is_dropped_with_its_chunk_only(tmp_path, caplog):
    path = tmp_path / "s.sqlite"
    store = await open_store(path)
    await store.append([Publish(ROOM, 0, 1, body(1))])
    await store.append([Publish(ROOM, 0, s, body(s)) for s in (2, 3, 4)])  # one chunk
    await store.append([Publish(ROOM, 1, 5, body(5))])
    await store.close()
    # The lengths in the middle chunk move one byte from one message to the next: still
    # a valid row to SQLite, with lengths that add up; the chunk's own checksum differs.
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE chunks SET sizes = ? WHERE first = 2",
        ((len(body(2)) - 1).to_bytes(4, "big") + (len(body(3)) + 1).to_bytes(4, "big")
         + len(body(4)).to_bytes(4, "big"),),
    )  # fmt: skip
    db.commit()
    db.close()

    caplog.set_level(logging.INFO, logger="ghostline.relay")
    store = await open_store(path)
    assert [m.seq for m in await store.read_after(ROOM, 0)] == [1, 5]
    assert "seqs=2-4 " in damage_lines(caplog)[0]
    # A damaged chunk is not trusted for duplicates either: a resend of what it held is
    # stored again (receivers drop the second copy by its counter), never claimed as held.
    got = await store.append([Publish(ROOM, 0, 3, body(3)), Publish(ROOM, 0, 1, body(1))])
    assert [(a.seq, a.duplicate) for a in got] == [(6, False), (1, True)]
    assert [m.seq for m in await store.read_after(ROOM, 0)] == [1, 5, 6]
    await store.close()


async def test_retention_removes_a_damaged_chunk_and_keeps_counting_right(tmp_path):
    path = tmp_path / "s.sqlite"
    store = await open_store(path, Retention(max_messages=4))
    await store.append([Publish(ROOM, 0, s, body(s)) for s in (1, 2)])
    await store.append([Publish(ROOM, 0, s, body(s)) for s in (3, 4)])
    await store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE chunks SET crc = crc + 1 WHERE first = 1")
    db.commit()
    db.close()

    store = await open_store(path, Retention(max_messages=4))
    await store.append([Publish(ROOM, 1, 0, body(5))])  # five held: the oldest chunk goes
    assert [m.seq for m in await store.read_after(ROOM, 0)] == [3, 4, 5]
    await store.append([Publish(ROOM, 1, s, body(s)) for s in (6, 7)])  # 3 and 4 go
    assert [m.seq for m in await store.read_after(ROOM, 0)] == [4, 5, 6, 7]
    await store.close()


def tamper(path, sql: str, *args: object) -> bytes:
    """Change the closed store with `sql`; its bytes after (a refused open changes none)."""
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()
    return path.read_bytes()


async def stored_room(path, messages: int) -> None:
    store = await open_store(path)
    if messages:
        await store.append([Publish(ROOM, 0, s, body(s)) for s in range(1, messages + 1)])
    await store.close()


async def test_a_head_below_the_rooms_stored_messages_refuses_the_store(tmp_path):
    """Numbering from there would give new messages seqs the members have already seen."""
    path = tmp_path / "s.sqlite"
    await stored_room(path, 5)
    before = tamper(path, "UPDATE rooms SET head = 2")
    with pytest.raises(StoreDamaged, match=r"messages stored above its head \(seq 2\)"):
        await open_store(path)
    assert path.read_bytes() == before


async def test_a_room_whose_messages_all_expired_is_not_refused_and_numbers_on(tmp_path):
    """Its head above every seq it stores (none): a legitimate store the checks let in."""
    path = tmp_path / "s.sqlite"
    store = await open_store(path, Retention(max_age=60))
    await store.append([Publish(ROOM, 0, s, body(s)) for s in (1, 2, 3)])
    assert await store.expire(time.time() + 61) == 3
    await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT head, (SELECT COUNT(*) FROM chunks) FROM rooms").fetchall() == [
        (3, 0)
    ]
    db.close()
    store = await open_store(path)
    assert await store.head(ROOM) == 3
    got = await store.append([Publish(ROOM, 1, 1, body(4))])
    assert [(a.seq, a.duplicate) for a in got] == [(4, False)]
    await store.close()


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("roster", b"a" * 33, "a roster of the wrong type or length"),
        ("roster", b"a" * 65, "a roster of the wrong type or length"),  # two keys and a byte
        ("roster", b"a" * 32, "a roster of the wrong type or length"),  # one member
        ("roster", "not a blob", "a roster of the wrong type or length"),
        ("head", -1, "a head out of range"),
        ("head", 1 << 40, "a head out of range"),  # it would number into the next room
        ("room", b"d" * 15, "a room id of the wrong type or length"),
        ("id", 1 << 22, "an id out of range"),
    ],
)
async def test_a_room_row_out_of_range_refuses_the_store(tmp_path, column, value, problem):
    path = tmp_path / "s.sqlite"
    await stored_room(path, 3)
    before = tamper(path, f"UPDATE rooms SET {column} = ?", value)
    with pytest.raises(StoreDamaged, match=problem):
        await open_store(path)
    assert path.read_bytes() == before


async def test_a_retired_rooms_damaged_row_refuses_its_join_and_nothing_else(tmp_path):
    path = tmp_path / "s.sqlite"
    await stored_room(path, 0)
    store = SqliteBackend(path)
    await store.open(None)  # type: ignore[arg-type]
    await store.close()  # nothing stored, nobody held it: retired on opening
    tamper(path, "UPDATE retired SET head = ? WHERE room = ?", 1 << 40, ROOM)
    store = SqliteBackend(path)
    await store.open(None)  # type: ignore[arg-type]
    with pytest.raises(StoreDamaged, match="a head out of range"):
        await store.bind_roster(ROOM, ROSTER, max_rooms=10)
    tamper(path, "UPDATE retired SET roster = ? WHERE room = ?", b"a" * 65, ROOM)
    with pytest.raises(StoreDamaged, match="a roster of the wrong type or length"):
        await store.roster(ROOM)  # (what a join asks first, not a roster mismatch)
    other = b"o" * 16
    assert await store.bind_roster(other, ROSTER, max_rooms=10) == ROSTER
    await store.append([Publish(other, 0, 1, body(1))])
    assert [m.seq for m in await store.read_after(other, 0)] == [1]
    await store.close()


async def test_relay_restore_refuses_a_backup_whose_room_row_is_out_of_range(tmp_path):
    store, backup = tmp_path / "s.sqlite", tmp_path / "backup.sqlite"
    await stored_room(store, 3)
    before = store.read_bytes()
    await stored_room(backup, 5)
    tamper(backup, "UPDATE rooms SET head = 4")
    with pytest.raises(StoreDamaged, match=r"messages stored above its head \(seq 4\)"):
        restore_store(backup, store)
    assert store.read_bytes() == before  # the store in place stays as it was


@pytest.mark.parametrize(
    ("hi", "lo"),
    [
        ("not a number", 1 - BIAS),  # text: SQLite sorts it above every integer
        (b"\x00\x01", 1 - BIAS),  # a blob: above text
        (-1e19, 1 - BIAS),  # a real below every counter: it would take every counter for new
        (1.5, 1 - BIAS),
        (1e20, 1 - BIAS),  # beyond 64 bits: SQLite keeps it as a real
        ("not a number", "nor this"),  # no range left to find its chunk by
    ],
)
async def test_a_senders_damaged_top_is_logged_and_its_counters_are_looked_up(
    tmp_path, caplog, hi, lo
):
    path = tmp_path / "s.sqlite"
    other = b"o" * 16
    store = await open_store(path)
    await store.bind_roster(other, ROSTER, max_rooms=10)
    await store.append([Publish(ROOM, 0, c, body(c)) for c in (1, 2, 3)])  # one chunk
    await store.append([Publish(ROOM, 1, 1, body(4)), Publish(other, 0, 1, body(1))])
    await store.close()
    db = sqlite3.connect(path)
    with db:  # the index row of sender 0's chunk, its only one: its top
        changed = db.execute(
            "UPDATE senders SET hi = ?, lo = ? WHERE sender = 0"
            " AND room = (SELECT id FROM rooms WHERE room = ?)",
            (hi, lo, ROOM),
        )
    assert changed.rowcount == 1
    db.close()

    caplog.set_level(logging.INFO, logger="ghostline.relay")
    store = await open_store(path)  # SQLite's integrity check does not see it
    await store.bind_roster(other, ROSTER, max_rooms=10)
    # a resend and a new message of the damaged sender, and another room, in one batch
    got = await store.append(
        [Publish(ROOM, 0, 2, body(2)), Publish(ROOM, 0, 4, body(5)), Publish(other, 0, 2, body(2))]
    )
    assert [(a.seq, a.duplicate) for a in got] == [(2, True), (5, False), (2, False)]
    got = await store.append([Publish(ROOM, 0, 4, body(5)), Publish(ROOM, 0, 3, body(3))])
    assert [(a.seq, a.duplicate) for a in got] == [(5, True), (3, True)]
    got = await store.append([Publish(ROOM, 0, 6, body(6)), Publish(ROOM, 1, 1, body(4))])
    assert [(a.seq, a.duplicate) for a in got] == [(6, False), (4, True)]
    assert [m.seq for m in await store.read_after(ROOM, 0)] == [1, 2, 3, 4, 5, 6]
    lines = damage_lines(caplog)
    assert len(lines) == 1, lines  # once, however many of its counters come
    assert f"room={ROOM.hex()} sender=0 " in lines[0]
    await store.close()
