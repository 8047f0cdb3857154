"""The single-node backend: one SQLite file (WAL, synchronous=FULL).

Writes run on one dedicated thread, so a batch of publishes from many connections
becomes one transaction and one fsync (group commit). Reads for resume run on a
second thread with their own connection, so a member catching up never delays a
commit. Each room's stored messages are a contiguous range [low, head]: retention
removes only from the low end, which keeps the bookkeeping in memory exact.
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    room BLOB PRIMARY KEY,
    roster BLOB NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    room BLOB NOT NULL,
    seq INTEGER NOT NULL,
    sender INTEGER NOT NULL,
    counter INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    stored_at REAL NOT NULL,
    UNIQUE (room, seq),
    UNIQUE (room, sender, counter)
);
"""

_KEY = 32


@dataclass(slots=True)
class _RoomState:
    """The writer thread's exact view of one room's stored range."""

    head: int
    low: int  # lowest stored seq; low == head + 1 when none is stored
    count: int
    size: int  # bytes of sealed messages stored


class SqliteBackend(Backend):
    def __init__(self, path: str | os.PathLike[str], retention: Retention | None = None) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="relay-store-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="relay-store-reader")
        self._wdb: sqlite3.Connection | None = None
        self._rdb: sqlite3.Connection | None = None
        self._rooms: dict[bytes, _RoomState] = {}  # writer thread only
        self._rosters: dict[bytes, Roster] = {}  # loop only: bound rosters never change

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self, hub: RelayHub) -> None:
        """Open (creating if needed) the store. A single node needs nothing from `hub`."""
        await self._write(self._open_sync)
        await self._read(self._open_reader_sync)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise StateError(f"cannot open the relay store {self.path}: {err}") from err
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)
        self._wdb = db
        for room, head in db.execute("SELECT room, head FROM rooms"):
            self._rooms[bytes(room)] = self._load_room(db, bytes(room), head)

    def _open_reader_sync(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        self._rdb = db

    @staticmethod
    def _load_room(db: sqlite3.Connection, room: bytes, head: int) -> _RoomState:
        low, count, size = db.execute(
            "SELECT MIN(seq), COUNT(*), COALESCE(SUM(LENGTH(sealed)), 0) FROM messages"
            " WHERE room = ?",
            (room,),
        ).fetchone()
        return _RoomState(
            head=head, low=low if low is not None else head + 1, count=count, size=size
        )

    async def close(self) -> None:
        def shut_writer() -> None:
            if self._wdb is not None:
                self._wdb.close()
                self._wdb = None

        def shut_reader() -> None:
            if self._rdb is not None:
                self._rdb.close()
                self._rdb = None

        await self._write(shut_writer)
        await self._read(shut_reader)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    async def _write(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def _read(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn)

    # --- rosters -----------------------------------------------------------------------

    async def bind_roster(self, room: bytes, roster: Roster, *, max_rooms: int) -> Roster:
        bound = self._rosters.get(room)
        if bound is None:
            bound = await self._write(lambda: self._bind_sync(room, roster, max_rooms))
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
        db.execute(
            "INSERT INTO rooms (room, roster, head, created_at) VALUES (?, ?, 0, ?)",
            (room, b"".join(roster), time.time()),
        )
        self._rooms[room] = _RoomState(head=0, low=1, count=0, size=0)
        return roster

    def _db(self) -> sqlite3.Connection:
        if self._wdb is None:
            raise StateError("the relay store is closed")
        return self._wdb

    # --- messages ----------------------------------------------------------------------

    async def append(self, batch: Sequence[Publish]) -> list[Appended]:
        return await self._write(lambda: self._append_sync(batch))

    def _append_sync(self, batch: Sequence[Publish]) -> list[Appended]:
        db = self._db()
        saved = {p.room: _copy(self._rooms[p.room]) for p in batch if p.room in self._rooms}
        db.execute("BEGIN IMMEDIATE")
        try:
            try:
                # Fast path: duplicates are rare, so insert all and let the unique index
                # tell us; on a conflict, start over looking each one up.
                results = self._append_rows(db, batch, lookup=False)
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                self._rooms.update({room: _copy(state) for room, state in saved.items()})
                db.execute("BEGIN IMMEDIATE")
                results = self._append_rows(db, batch, lookup=True)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._rooms.update(saved)
            raise
        return results

    def _append_rows(
        self, db: sqlite3.Connection, batch: Sequence[Publish], *, lookup: bool
    ) -> list[Appended]:
        rooms = self._rooms
        now = time.time()
        results: list[Appended] = []
        seen: dict[tuple[bytes, int, int], int] = {}
        rows: list[tuple[bytes, int, int, int, bytes, float]] = []
        for p in batch:
            state = rooms.get(p.room)
            if state is None:
                raise StateError("publish to a room with no bound roster")
            key = (p.room, p.sender, p.counter)
            seq = seen.get(key)
            if seq is None and lookup:
                row = db.execute(
                    "SELECT seq FROM messages WHERE room = ? AND sender = ? AND counter = ?", key
                ).fetchone()
                seq = row[0] if row is not None else None
            if seq is not None:
                results.append(Appended(seq, True))
                continue
            state.head += 1
            state.count += 1
            state.size += len(p.sealed)
            seen[key] = state.head
            rows.append((p.room, state.head, p.sender, p.counter, p.sealed, now))
            results.append(Appended(state.head, False))
        db.executemany(
            "INSERT INTO messages (room, seq, sender, counter, sealed, stored_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        touched = {r[0] for r in rows}
        db.executemany(
            "UPDATE rooms SET head = ? WHERE room = ?",
            [(rooms[room].head, room) for room in touched],
        )
        for room in touched:
            self._trim(db, room, rooms[room])
        return results

    def _trim(self, db: sqlite3.Connection, room: bytes, state: _RoomState) -> None:
        """Drop the oldest messages of `room` until it is within the count and byte limits."""
        keep = self.retention
        cut = state.low - 1  # remove seq <= cut
        freed = 0
        if state.count > keep.max_messages:
            over_to = state.head - keep.max_messages
            if over_to > cut:
                (freed,) = db.execute(
                    "SELECT COALESCE(SUM(LENGTH(sealed)), 0) FROM messages"
                    " WHERE room = ? AND seq <= ?",
                    (room, over_to),
                ).fetchone()
                cut = over_to
        if state.size - freed > keep.max_bytes:
            excess = state.size - freed - keep.max_bytes
            for seq, size in db.execute(
                "SELECT seq, LENGTH(sealed) FROM messages WHERE room = ? AND seq > ? ORDER BY seq",
                (room, cut),
            ):
                cut = seq
                freed += size
                excess -= size
                if excess <= 0:
                    break
        if cut >= state.low:
            db.execute("DELETE FROM messages WHERE room = ? AND seq <= ?", (room, cut))
            state.count -= cut - state.low + 1
            state.size -= freed
            state.low = cut + 1

    async def read_after(
        self, room: bytes, after: int, *, limit: int = 256, max_bytes: int = 4 * 2**20
    ) -> list[StoredMessage]:
        def read() -> list[StoredMessage]:
            db = self._rdb
            if db is None:
                raise StateError("the relay store is closed")
            out: list[StoredMessage] = []
            total = 0
            cur = db.execute(
                "SELECT seq, sealed FROM messages WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
                (room, after, limit),
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
        def read() -> int:
            state = self._rooms.get(room)
            return state.head if state is not None else 0

        # The writer thread owns the room table: ask it, so head is never behind a commit.
        return await self._write(read)

    async def expire(self, now: float) -> int:
        return await self._write(lambda: self._expire_sync(now))

    def _expire_sync(self, now: float) -> int:
        # No index on stored_at (it would cost every insert): within a room stored_at
        # grows with seq, so walk each room from its oldest message and stop early.
        db = self._db()
        cutoff = now - self.retention.max_age
        removed = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for room, state in self._rooms.items():
                if state.count == 0:
                    continue
                last, freed = 0, 0
                cur = db.execute(
                    "SELECT seq, stored_at, LENGTH(sealed) FROM messages"
                    " WHERE room = ? AND seq >= ? ORDER BY seq",
                    (room, state.low),
                )
                for seq, stored_at, size in cur:
                    if stored_at >= cutoff:
                        break
                    last, freed = seq, freed + size
                cur.close()
                if not last:
                    continue
                db.execute("DELETE FROM messages WHERE room = ? AND seq <= ?", (room, last))
                removed += last - state.low + 1
                state.count -= last - state.low + 1
                state.size -= freed
                state.low = last + 1
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            for room, head in db.execute("SELECT room, head FROM rooms").fetchall():
                self._rooms[bytes(room)] = self._load_room(db, bytes(room), head)
            raise
        return removed


def _copy(state: _RoomState) -> _RoomState:
    return _RoomState(state.head, state.low, state.count, state.size)
