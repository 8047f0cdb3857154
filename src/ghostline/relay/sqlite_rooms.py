"""Rooms in the SQLite store: registering one for its roster, bringing one back, and
retiring the ones nobody holds and that have nothing stored.

A retired room leaves `rooms` (the table `max_rooms` counts) but its roster and head
stay in `retired`, so that when its group comes back its numbering goes on where it
stopped (a client's cursor stays right) and nobody else can claim its room id with
another roster. Each function runs on the writer thread, under the write lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from .backend import RoomLimitReached, Roster, split_roster
from .chunks import SEQ_BITS
from .sqlite_schema import MAX_ROOM_ID, RoomState, load_room, room_row_problem
from .storefile import StoreDamaged


def find_roster(db: sqlite3.Connection, path: Path, room: bytes) -> Roster | None:
    """The roster `room` is registered or was retired with, or None. Raises
    StoreDamaged if its row is out of range."""
    row = db.execute(
        "SELECT roster FROM rooms WHERE room = ?1"
        " UNION ALL SELECT roster FROM retired WHERE room = ?1 LIMIT 1",
        (room,),
    ).fetchone()
    if row is None:
        return None
    _check(path, room, row[0], 0)
    return split_roster(row[0])


def bind(
    db: sqlite3.Connection, path: Path, room: bytes, roster: Roster, *, full: bool
) -> tuple[Roster, RoomState]:
    """Register `room` for `roster` (or for the roster it was retired with), or load it
    back if it is on disk: its roster and state. `full`: the store holds as many rooms
    as it may, so registering one raises RoomLimitReached. Raises StoreDamaged if the
    room's row is out of range (the other rooms are not affected)."""
    row = db.execute("SELECT id, roster, head FROM rooms WHERE room = ?", (room,)).fetchone()
    if row is not None:  # on disk but not in memory (a removal that failed)
        room_id, blob, head = row
        _check(path, room, blob, head)
        return split_roster(blob), load_room(db, room_id, head)
    if full:
        raise RoomLimitReached()
    retired = db.execute("SELECT roster, head FROM retired WHERE room = ?", (room,)).fetchone()
    blob, head = retired if retired else (b"".join(roster), 0)
    _check(path, room, blob, head)
    db.execute("BEGIN IMMEDIATE")
    try:
        room_id = _free_room_id(db)
        db.execute(
            "INSERT INTO rooms (id, room, roster, head, created_at) VALUES (?, ?, ?, ?, ?)",
            (room_id, room, blob, head, time.time()),
        )
        db.execute("DELETE FROM retired WHERE room = ?", (room,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return split_roster(blob), RoomState(id=room_id, head=head, count=0, size=0)


def _check(path: Path, room: bytes, roster: object, head: object) -> None:
    problem = room_row_problem(room, roster, head)
    if problem is not None:
        raise StoreDamaged(path, f"the stored row of room {room.hex()} has {problem}")


def _free_room_id(db: sqlite3.Connection) -> int:
    (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM rooms").fetchone()
    if top + 1 < MAX_ROOM_ID:
        return int(top) + 1
    # the ids above are used up (rooms come and go): the lowest free one
    row = db.execute(
        "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE id = 1) UNION ALL"
        " SELECT r.id + 1 FROM rooms r WHERE r.id + 1 < ?"
        " AND NOT EXISTS (SELECT 1 FROM rooms s WHERE s.id = r.id + 1) LIMIT 1",
        (MAX_ROOM_ID,),
    ).fetchone()
    if row is None:
        raise RoomLimitReached()
    return int(row[0])


def retire(db: sqlite3.Connection, states: Sequence[RoomState]) -> None:
    """Move these rooms to `retired`, with whatever they still store, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for state in states:
            base = state.id << SEQ_BITS
            db.execute(
                "INSERT OR REPLACE INTO retired (room, roster, head)"
                " SELECT room, roster, head FROM rooms WHERE id = ?",
                (state.id,),
            )
            db.execute("DELETE FROM rooms WHERE id = ?", (state.id,))
            db.execute("DELETE FROM senders WHERE room = ?", (state.id,))
            db.execute("DELETE FROM chunks WHERE key > ? AND key < ?", (base, base + 2**SEQ_BITS))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
