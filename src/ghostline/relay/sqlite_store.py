"""The single-node backend: one SQLite file (WAL, synchronous=FULL).

Group commit, pipelined: `append` inserts a batch on the event loop (plain C calls into
SQLite, a few microseconds per message, no thread hand-off per row) and hands only the
COMMIT, the fsync, to a dedicated writer thread, which runs it without the GIL. While
that commit is in flight the relay keeps reading, and whatever arrives becomes the next
batch (`rooms.RoomHub`). An `asyncio.Lock` keeps every write (insert + commit, roster,
expiry) in order on the one write connection.

Reads for resume run on a second thread with their own connection, so a member catching
up never delays a commit. WAL checkpoints run on a third thread and connection, off the
commit path (the writer's own automatic checkpoint is only a backstop).

Each message is one row of a rowid table keyed by `room id << 40 | seq`, so a room's
messages are one contiguous key range and appending touches the end of it; a unique
index on (room, sender, counter) recognises duplicates. Each room's stored messages are
a contiguous range [low, head]: retention removes only from the low end, which keeps
the bookkeeping in memory exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import StateError
from .backend import (
    Appended,
    Backend,
    Publish,
    RelayHub,
    RoomLimitReached,
    Roster,
    StoredMessage,
)
from .config import Retention

T = TypeVar("T")

_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    id INTEGER PRIMARY KEY,
    room BLOB NOT NULL UNIQUE,
    roster BLOB NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    key INTEGER PRIMARY KEY,  -- rooms.id << 40 | seq
    room INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    sender INTEGER NOT NULL,
    counter INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    stored_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedupe ON messages (room, sender, counter);
"""
# The first layout (room BLOB in every message row, two unique indexes): copied over.
_MIGRATE_V1 = """
ALTER TABLE rooms RENAME TO rooms_v1;
ALTER TABLE messages RENAME TO messages_v1;
{schema}
INSERT INTO rooms (room, roster, head, created_at)
    SELECT room, roster, head, created_at FROM rooms_v1 ORDER BY created_at;
INSERT INTO messages (key, room, seq, sender, counter, sealed, stored_at)
    SELECT (r.id << 40) | m.seq, r.id, m.seq, m.sender, m.counter, m.sealed, m.stored_at
    FROM messages_v1 m JOIN rooms r ON r.room = m.room;
DROP TABLE messages_v1;
DROP TABLE rooms_v1;
"""

_KEY = 32
_SEQ_BITS = 40
_MAX_ROOM_ID = 1 << 22  # keys stay below 2**62
_INSERT = (
    "INSERT INTO messages (key, room, seq, sender, counter, sealed, stored_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_CHECKPOINT_BYTES = 4 * 2**20  # a background checkpoint after about this much is committed
_AUTOCHECKPOINT_PAGES = 16384  # the writer's own checkpoint (64 MiB of WAL): a backstop
_JOURNAL_SIZE_LIMIT = 64 * 2**20


@dataclass(slots=True)
class _RoomState:
    """The exact view of one room's stored range (changed only under the write lock)."""

    id: int
    head: int
    low: int  # lowest stored seq; low == head + 1 when none is stored
    count: int
    size: int  # bytes of sealed messages stored


class SqliteBackend(Backend):
    pipelined_appends = True  # the next batch's inserts and fsync overlap this fan-out

    def __init__(self, path: str | os.PathLike[str], retention: Retention | None = None) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="relay-store-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="relay-store-reader")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="relay-store-checkpoint")
        self._wdb: sqlite3.Connection | None = None
        self._rdb: sqlite3.Connection | None = None
        self._cdb: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()  # one write at a time on the write connection
        self._rooms: dict[bytes, _RoomState] = {}  # changed only while holding _lock
        self._rosters: dict[bytes, Roster] = {}  # loop only: bound rosters never change
        self._uncheckpointed = 0  # bytes committed since the last background checkpoint
        self._checkpointing = False

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self, hub: RelayHub) -> None:
        """Open (creating if needed) the store. A single node needs nothing from `hub`."""
        await self._write(self._open_sync)
        await self._read(self._open_reader_sync)
        await asyncio.get_running_loop().run_in_executor(
            self._checkpointer, self._open_checkpointer_sync
        )

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version < _SCHEMA_VERSION:
                old = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
                ).fetchone()
                script = _MIGRATE_V1.format(schema=_SCHEMA) if old else _SCHEMA
                db.executescript(
                    f"BEGIN IMMEDIATE; {script} PRAGMA user_version={_SCHEMA_VERSION}; COMMIT;"
                )
            elif version > _SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"written by a newer relay (layout {version})")
        except sqlite3.DatabaseError as err:
            raise StateError(f"cannot open the relay store {self.path}: {err}") from err
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)
        self._wdb = db
        for room_id, room, head in db.execute("SELECT id, room, head FROM rooms").fetchall():
            self._rooms[bytes(room)] = self._load_room(db, room_id, head)

    def _open_reader_sync(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        self._rdb = db

    def _open_checkpointer_sync(self) -> None:
        self._cdb = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    @staticmethod
    def _load_room(db: sqlite3.Connection, room_id: int, head: int) -> _RoomState:
        low, count, size = db.execute(
            "SELECT MIN(seq), COUNT(*), COALESCE(SUM(LENGTH(sealed)), 0) FROM messages"
            " WHERE key > ? AND key < ?",
            (room_id << _SEQ_BITS, (room_id + 1) << _SEQ_BITS),
        ).fetchone()
        return _RoomState(
            id=room_id, head=head, low=low if low is not None else head + 1, count=count, size=size
        )

    async def close(self) -> None:
        def shut(attr: str) -> Callable[[], None]:
            def run() -> None:
                db = getattr(self, attr)
                if db is not None:
                    db.close()
                    setattr(self, attr, None)

            return run

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._checkpointer, shut("_cdb"))
        await self._read(shut("_rdb"))
        async with self._lock:
            await self._write(shut("_wdb"))  # the last connection out checkpoints the WAL
        for pool in (self._writer, self._reader, self._checkpointer):
            pool.shutdown(wait=True)

    async def _write(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the writer thread; the caller holds `_lock`."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def _locked_write(self, fn: Callable[[], T]) -> T:
        async with self._lock:
            # shield: a cancelled caller must not release the lock while fn still runs
            return await asyncio.shield(self._write(fn))

    async def _read(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn)

    # --- rosters -----------------------------------------------------------------------

    async def bind_roster(self, room: bytes, roster: Roster, *, max_rooms: int) -> Roster:
        bound = self._rosters.get(room)
        if bound is None:
            bound = await self._locked_write(lambda: self._bind_sync(room, roster, max_rooms))
            self._rosters[room] = bound
        return bound

    def _bind_sync(self, room: bytes, roster: Roster, max_rooms: int) -> Roster:
        db = self._db()
        row = db.execute("SELECT roster FROM rooms WHERE room = ?", (room,)).fetchone()
        if row is not None:
            blob = bytes(row[0])
            return tuple(blob[i : i + _KEY] for i in range(0, len(blob), _KEY))
        if len(self._rooms) >= max_rooms:
            raise RoomLimitReached()
        cur = db.execute(
            "INSERT INTO rooms (room, roster, head, created_at) VALUES (?, ?, 0, ?)",
            (room, b"".join(roster), time.time()),
        )
        room_id = cur.lastrowid
        if room_id is None or room_id >= _MAX_ROOM_ID:
            db.execute("DELETE FROM rooms WHERE room = ?", (room,))
            raise RoomLimitReached()
        self._rooms[room] = _RoomState(id=room_id, head=0, low=1, count=0, size=0)
        return roster

    def _db(self) -> sqlite3.Connection:
        if self._wdb is None:
            raise StateError("the relay store is closed")
        return self._wdb

    # --- messages ----------------------------------------------------------------------

    async def append(self, batch: Sequence[Publish]) -> list[Appended]:
        await self._lock.acquire()
        try:
            db = self._db()
            saved = self._save(batch)
            try:
                results = self._insert(db, batch, saved)
            except BaseException:
                self._restore(saved)
                raise
            # straight to the writer thread: the fsync starts now, not a loop turn later
            commit = asyncio.get_running_loop().run_in_executor(self._writer, self._commit_sync)
        except BaseException:
            self._lock.release()
            raise

        def finished(fut: asyncio.Future[int]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                self._restore(saved)
            self._lock.release()

        commit.add_done_callback(finished)
        # shield: a cancelled caller must not release the lock while the commit still runs
        await asyncio.shield(commit)
        self._uncheckpointed += sum(len(p.sealed) for p in batch)
        if self._uncheckpointed >= _CHECKPOINT_BYTES and not self._checkpointing:
            self._start_checkpoint()
        return results

    def _restore(self, saved: dict[bytes, _RoomState]) -> None:
        self._rooms.update({room: _copy(state) for room, state in saved.items()})

    def _save(self, batch: Sequence[Publish]) -> dict[bytes, _RoomState]:
        rooms = self._rooms
        return {room: _copy(rooms[room]) for room in {p.room for p in batch} if room in rooms}

    def _insert(
        self, db: sqlite3.Connection, batch: Sequence[Publish], saved: dict[bytes, _RoomState]
    ) -> list[Appended]:
        """BEGIN and insert `batch` (on the loop thread); the caller commits."""
        db.execute("BEGIN IMMEDIATE")
        try:
            try:
                # Fast path: duplicates are rare, so insert all and let the unique index
                # tell us; on a conflict, start over looking each one up.
                return self._insert_rows(db, batch, lookup=False)
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                self._restore(saved)
                db.execute("BEGIN IMMEDIATE")
                return self._insert_rows(db, batch, lookup=True)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _commit_sync(self) -> int:
        db = self._db()
        try:
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return 0

    def _insert_rows(
        self, db: sqlite3.Connection, batch: Sequence[Publish], *, lookup: bool
    ) -> list[Appended]:
        rooms = self._rooms
        now = time.time()
        results: list[Appended] = []
        seen: dict[tuple[bytes, int, int], int] = {}
        rows: list[tuple[int, int, int, int, int, bytes, float]] = []
        touched: dict[bytes, _RoomState] = {}
        for p in batch:
            room = p.room
            state = rooms.get(room)
            if state is None:
                raise StateError("publish to a room with no bound roster")
            if lookup:  # (the fast path lets the unique index find duplicates)
                key = (room, p.sender, p.counter)
                seq = seen.get(key)
                if seq is None:
                    row = db.execute(
                        "SELECT seq FROM messages WHERE room = ? AND sender = ? AND counter = ?",
                        (state.id, p.sender, p.counter),
                    ).fetchone()
                    seq = row[0] if row is not None else None
                if seq is not None:
                    results.append(Appended(seq, True))
                    continue
                seen[key] = state.head + 1
            seq = state.head = state.head + 1
            state.count += 1
            state.size += len(p.sealed)
            touched[room] = state
            rows.append(
                ((state.id << _SEQ_BITS) | seq, state.id, seq, p.sender, p.counter, p.sealed, now)
            )
            results.append(Appended(seq, False))
        db.executemany(_INSERT, rows)
        db.executemany(
            "UPDATE rooms SET head = ? WHERE id = ?", [(s.head, s.id) for s in touched.values()]
        )
        keep = self.retention
        for state in touched.values():
            if state.count > keep.max_messages or state.size > keep.max_bytes:
                self._trim(db, state)
        return results

    def _trim(self, db: sqlite3.Connection, state: _RoomState) -> None:
        """Drop the oldest messages of a room until it is within the count and byte limits."""
        keep = self.retention
        base = state.id << _SEQ_BITS
        cut = state.low - 1  # remove seq <= cut
        freed = 0
        if state.count > keep.max_messages:
            over_to = state.head - keep.max_messages
            if over_to > cut:
                (freed,) = db.execute(
                    "SELECT COALESCE(SUM(LENGTH(sealed)), 0) FROM messages"
                    " WHERE key > ? AND key <= ?",
                    (base, base | over_to),
                ).fetchone()
                cut = over_to
        if state.size - freed > keep.max_bytes:
            excess = state.size - freed - keep.max_bytes
            for seq, size in db.execute(
                "SELECT seq, LENGTH(sealed) FROM messages WHERE key > ? AND key < ? ORDER BY key",
                (base | cut, base + (1 << _SEQ_BITS)),
            ):
                cut = seq
                freed += size
                excess -= size
                if excess <= 0:
                    break
        if cut >= state.low:
            db.execute("DELETE FROM messages WHERE key > ? AND key <= ?", (base, base | cut))
            state.count -= cut - state.low + 1
            state.size -= freed
            state.low = cut + 1

    def _start_checkpoint(self) -> None:
        self._checkpointing = True
        self._uncheckpointed = 0

        def run() -> None:
            if self._cdb is not None:
                # PASSIVE: copies what it can without ever blocking the writer.
                self._cdb.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        def done(_: object) -> None:
            self._checkpointing = False

        with contextlib.suppress(RuntimeError):  # shutting down
            fut = asyncio.get_running_loop().run_in_executor(self._checkpointer, run)
            fut.add_done_callback(done)
            return
        self._checkpointing = False

    async def read_after(
        self, room: bytes, after: int, *, limit: int = 256, max_bytes: int = 4 * 2**20
    ) -> list[StoredMessage]:
        state = self._rooms.get(room)
        if state is None:
            return []
        base = state.id << _SEQ_BITS

        def read() -> list[StoredMessage]:
            db = self._rdb
            if db is None:
                raise StateError("the relay store is closed")
            out: list[StoredMessage] = []
            total = 0
            cur = db.execute(
                "SELECT seq, sealed FROM messages WHERE key > ? AND key < ? ORDER BY key LIMIT ?",
                (base + max(after, 0), base + (1 << _SEQ_BITS), limit),
            )
            for seq, sealed in cur:
                out.append(StoredMessage(seq, bytes(sealed)))
                total += len(sealed)
                if total >= max_bytes:
                    break
            cur.close()
            return out

        return await self._read(read)

    async def head(self, room: bytes) -> int:
        # Under the write lock, so head is never behind a commit in flight.
        async with self._lock:
            state = self._rooms.get(room)
            return state.head if state is not None else 0

    async def expire(self, now: float) -> int:
        return await self._locked_write(lambda: self._expire_sync(now))

    def _expire_sync(self, now: float) -> int:
        # No index on stored_at (it would cost every insert): within a room stored_at
        # grows with seq, so walk each room from its oldest message and stop early.
        db = self._db()
        cutoff = now - self.retention.max_age
        removed = 0
        saved = {room: _copy(state) for room, state in self._rooms.items()}
        db.execute("BEGIN IMMEDIATE")
        try:
            for state in self._rooms.values():
                if state.count == 0:
                    continue
                base = state.id << _SEQ_BITS
                last, freed = 0, 0
                cur = db.execute(
                    "SELECT seq, stored_at, LENGTH(sealed) FROM messages"
                    " WHERE key >= ? AND key < ? ORDER BY key",
                    (base | state.low, base + (1 << _SEQ_BITS)),
                )
                for seq, stored_at, size in cur:
                    if stored_at >= cutoff:
                        break
                    last, freed = seq, freed + size
                cur.close()
                if not last:
                    continue
                db.execute("DELETE FROM messages WHERE key > ? AND key <= ?", (base, base | last))
                removed += last - state.low + 1
                state.count -= last - state.low + 1
                state.size -= freed
                state.low = last + 1
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._restore(saved)
            raise
        return removed


def _copy(state: _RoomState) -> _RoomState:
    return _RoomState(state.id, state.head, state.low, state.count, state.size)
