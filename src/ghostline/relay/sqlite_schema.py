"""The SQLite store on disk: its tables (layout 4), creating and opening them (each
room's row checked to be in range), and each room's state as the store's other modules
keep it in memory.

A commit stores each room's messages as ONE row of `chunks` (chunks.py), keyed by
`room id << 40 | seq of its last message`: the sealed messages concatenated, their
lengths, each one's (sender, counter), a checksum per message and one over the rest. So
a room's messages are one contiguous key range, appending touches its end, and storing a
message costs a few bytes of a row rather than a row and an index entry. Duplicates are
recognised without a per-message index: `senders` holds, per chunk and sender, the range
of that sender's counters in the chunk, and each room's state keeps in memory the
highest counter each sender ever had stored (`sqlite_append.py`). Each room's stored
messages are a contiguous range ending at its head: retention removes only the oldest
(`sqlite_retention.py`).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..protocol.envelope import PAD_ID_LEN
from ..protocol.frames import STORE_ID_LEN
from .backend import Roster, roster_problem, split_roster
from .chunks import SEQ_BITS
from .storefile import StoreDamaged, StoreLayoutError, check_integrity, make_private

LAYOUT = 4
_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY,
    room BLOB NOT NULL UNIQUE,
    roster BLOB NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE retired (        -- rooms removed while nobody held them and nothing was stored
    room BLOB PRIMARY KEY,
    roster BLOB NOT NULL,
    head INTEGER NOT NULL     -- numbering goes on from here if the room comes back
) WITHOUT ROWID;
CREATE TABLE chunks (
    key INTEGER PRIMARY KEY,  -- rooms.id << 40 | seq of the chunk's last message
    first INTEGER NOT NULL,   -- seq of its first message (messages first..last, no gap)
    sizes BLOB NOT NULL,      -- u32 big-endian length of each sealed message
    senders BLOB NOT NULL,    -- u16 big-endian sender of each
    counters BLOB NOT NULL,   -- u64 big-endian counter of each
    sums BLOB NOT NULL,       -- u32 big-endian CRC-32 of each, started from its seq
    crc INTEGER NOT NULL,     -- CRC-32 of key, first, sizes, senders, counters, sums
    stored_at REAL NOT NULL,  -- when it was committed
    data BLOB NOT NULL        -- the sealed messages, concatenated
);
CREATE TABLE senders (
    room INTEGER NOT NULL,    -- rooms.id
    sender INTEGER NOT NULL,
    hi INTEGER NOT NULL,      -- highest counter of this sender in the chunk (minus 2**63)
    lo INTEGER NOT NULL,      -- lowest (minus 2**63)
    chunk INTEGER NOT NULL,   -- chunks.key
    PRIMARY KEY (room, sender, hi)
) WITHOUT ROWID;
PRAGMA user_version={LAYOUT};
"""

MAX_ROOM_ID = 1 << 22  # rooms.id: chunk keys (id << SEQ_BITS | seq) stay below 2**62
BIAS = 1 << 63  # counters are u64; SQLite integers are signed
CHUNK_COLUMNS = "key, first, sizes, senders, counters, sums, crc"
INSERT_SENDER = "INSERT INTO senders VALUES (?, ?, ?, ?, ?)"
_AUTOCHECKPOINT_PAGES = 16384  # the writer's own checkpoint (64 MiB of WAL): a backstop
_JOURNAL_SIZE_LIMIT = 64 * 2**20


@dataclass(slots=True, eq=False)
class RoomState:
    """The exact view of one room's stored range (changed only under the write lock)."""

    id: int
    head: int
    count: int
    size: int  # bytes of sealed messages stored
    users: int = 0  # connections holding the room (bind_roster .. release), loop only
    # sender -> an upper bound of the counters it has stored (loaded lazily; only ever
    # raised, so a rolled-back batch leaves it merely loose, never wrong; above every
    # counter if its stored top is damaged, sqlite_append._UNKNOWN_TOP)
    top: dict[int, int] = field(default_factory=dict)
    # sender (whose stored top is damaged) -> the chunks whose `senders` rows for it
    # have a `hi` that is no integer: a look-up by range may miss them
    unindexed: dict[int, tuple[int, ...]] = field(default_factory=dict)


# Each room a write changes, as it was before: (state, head, count, size).
Saved = list[tuple[RoomState, int, int, int]]


def connect(path: Path) -> sqlite3.Connection:
    """A connection of the store's (autocommit: every transaction is explicit), usable
    from the one thread that its owner runs it on."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def open_store(
    path: Path,
) -> tuple[sqlite3.Connection, bytes, dict[bytes, Roster], dict[bytes, RoomState]]:
    """Open (creating if new) the store at `path` for writing: the write connection, the
    store id, and every room's roster and state. Raises StoreDamaged, StoreLayoutError,
    or sqlite3.OperationalError when it is not the file's fault (busy, I/O); the
    connection is closed then."""
    make_private(path)  # before SQLite, which gives -wal and -shm the file's mode
    db = connect(path)
    try:
        check_integrity(db, path)
        store_id, rosters, rooms = _read_or_create(db, path)
    except BaseException:
        db.close()
        raise
    return db, store_id, rosters, rooms


def _read_or_create(
    db: sqlite3.Connection, path: Path
) -> tuple[bytes, dict[bytes, Roster], dict[bytes, RoomState]]:
    try:
        (layout,) = db.execute("PRAGMA user_version").fetchone()
        new = layout == 0 and not db.execute("SELECT 1 FROM sqlite_master").fetchone()
        if not new and layout != LAYOUT:  # refused before anything is written
            raise StoreLayoutError(path, layout, LAYOUT)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
        if new:
            store_id = os.urandom(STORE_ID_LEN).hex()  # made once, kept for the store's life
            db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA}"
                f" INSERT INTO meta VALUES ('store_id', X'{store_id}'); COMMIT;"
            )
        row = db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        if row is None or not isinstance(row[0], bytes) or len(row[0]) != STORE_ID_LEN:
            raise StoreDamaged(path, "its store id is missing or damaged")
        rosters: dict[bytes, Roster] = {}
        rooms: dict[bytes, RoomState] = {}
        for room_id, room, roster, head in checked_rooms(db, path):
            rosters[room] = split_roster(roster)
            rooms[room] = load_room(db, room_id, head)
        return row[0], rosters, rooms
    except sqlite3.OperationalError:  # not the file's fault (busy, I/O)
        raise
    except sqlite3.DatabaseError as err:  # corrupt, not a database
        raise StoreDamaged(path, str(err)) from err


def checked_rooms(db: sqlite3.Connection, path: Path) -> list[tuple[int, bytes, bytes, int]]:
    """Each row of `rooms` (id, room, roster, head), checked to be in range; raises
    StoreDamaged naming the first that is not."""
    rows = db.execute("SELECT id, room, roster, head FROM rooms").fetchall()
    for room_id, room, roster, head in rows:
        problem = room_row_problem(room, roster, head) or _numbering_problem(db, room_id, head)
        if problem is not None:
            name = room.hex() if isinstance(room, bytes) else "?"  # as the relay logs rooms
            raise StoreDamaged(path, f"room {name} (row {room_id}) has {problem}")
    return rows


def room_row_problem(room: object, roster: object, head: object) -> str | None:
    """What makes a room's row (in `rooms` or `retired`) unusable, or None: its values
    are read from a file, and go into keys, seq arithmetic and join checks."""
    if not isinstance(room, bytes) or len(room) != PAD_ID_LEN:
        return "a room id of the wrong type or length"
    problem = roster_problem(roster)
    if problem is not None:
        return problem
    if not isinstance(head, int) or not 0 <= head < 1 << SEQ_BITS:
        return "a head out of range"
    return None


def _numbering_problem(db: sqlite3.Connection, room_id: object, head: int) -> str | None:
    """A room's next seq must be above every seq it stores: a head below its last stored
    message would give new messages seqs its members have already seen."""
    if not isinstance(room_id, int) or not 0 < room_id < MAX_ROOM_ID:
        return "an id out of range"
    (last,) = db.execute(
        "SELECT MAX(key) FROM chunks WHERE key > ? AND key < ?",
        (room_id << SEQ_BITS, (room_id + 1) << SEQ_BITS),
    ).fetchone()
    if last is not None and last & ((1 << SEQ_BITS) - 1) > head:
        return f"messages stored above its head (seq {head})"
    return None


def load_room(db: sqlite3.Connection, room_id: int, head: int) -> RoomState:
    # counted from the blobs' lengths, which stay sane even in a damaged chunk
    count, size = db.execute(
        "SELECT COALESCE(SUM(LENGTH(sizes) / 4), 0), COALESCE(SUM(LENGTH(data)), 0)"
        " FROM chunks WHERE key > ? AND key < ?",
        (room_id << SEQ_BITS, (room_id + 1) << SEQ_BITS),
    ).fetchone()
    return RoomState(id=room_id, head=head, count=count, size=size)


def restore(saved: Saved) -> None:
    """Put each room's state back as it was before a write that did not commit."""
    for state, head, count, size in saved:
        state.head, state.count, state.size = head, count, size
