"""The single-node backend: one SQLite file (WAL, synchronous=FULL).

Group commit, pipelined: `append` inserts a batch on the event loop (plain C calls into
SQLite, no thread hand-off per row) and hands only the COMMIT, the fsync, to a dedicated
writer thread, which runs it without the GIL. While that commit is in flight the relay
keeps reading, and whatever arrives becomes the next batch (`rooms.RoomHub`). An
`asyncio.Lock` keeps every write (insert + commit, roster, expiry) in order on the one
write connection.

Reads for resume run on a second thread with their own connection, so a member catching
up never delays a commit. WAL checkpoints run on a third thread and connection, off the
commit path (the writer's own automatic checkpoint is only a backstop).

Layout (3): a commit stores each room's messages as ONE row of `chunks`, keyed by
`room id << 40 | seq of its last message`: the sealed messages concatenated, their
lengths, and each one's (sender, counter). So a room's messages are one contiguous key
range, appending touches its end, and storing a message costs a few bytes of a row rather
than a row and an index entry. Duplicates are recognised without a per-message index:
`senders` holds, per chunk and sender, the range of that sender's counters in the chunk
(one small row per sender per commit), and the store keeps in memory the highest counter
each sender ever had stored. A counter above it is new without a look-up (senders count
up); any other is looked up exactly: the chunks whose range holds it, then their
(sender, counter) lists. Each room's stored messages are a contiguous range [low, head]:
retention removes only from the low end (cutting into a chunk rewrites that chunk), which
keeps the bookkeeping in memory exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import StateError
from ..wire import STORE_ID_LEN
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

_SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    id INTEGER PRIMARY KEY,
    room BLOB NOT NULL UNIQUE,
    roster BLOB NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    key INTEGER PRIMARY KEY,  -- rooms.id << 40 | seq of the chunk's last message
    first INTEGER NOT NULL,   -- seq of its first message (messages first..last, no gap)
    sizes BLOB NOT NULL,      -- u32 big-endian length of each sealed message
    senders BLOB NOT NULL,    -- u16 big-endian sender of each
    counters BLOB NOT NULL,   -- u64 big-endian counter of each
    stored_at REAL NOT NULL,  -- when it was committed
    data BLOB NOT NULL        -- the sealed messages, concatenated
);
CREATE TABLE IF NOT EXISTS senders (
    room INTEGER NOT NULL,    -- rooms.id
    sender INTEGER NOT NULL,
    hi INTEGER NOT NULL,      -- highest counter of this sender in the chunk (minus 2**63)
    lo INTEGER NOT NULL,      -- lowest (minus 2**63)
    chunk INTEGER NOT NULL,   -- chunks.key
    PRIMARY KEY (room, sender, hi)
) WITHOUT ROWID;
"""
# The first layout (room BLOB in every message row, two unique indexes): to layout 2.
_MIGRATE_V1 = """
ALTER TABLE rooms RENAME TO rooms_v1;
ALTER TABLE messages RENAME TO messages_v1;
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY,
    room BLOB NOT NULL UNIQUE,
    roster BLOB NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE messages (
    key INTEGER PRIMARY KEY, room INTEGER NOT NULL, seq INTEGER NOT NULL,
    sender INTEGER NOT NULL, counter INTEGER NOT NULL, sealed BLOB NOT NULL,
    stored_at REAL NOT NULL
);
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
_SEQ_MASK = (1 << _SEQ_BITS) - 1
_MAX_ROOM_ID = 1 << 22  # keys stay below 2**62
_BIAS = 1 << 63  # counters are u64; SQLite integers are signed
_CHUNK_BYTES = 256 * 1024  # a room's share of one commit is split into chunks of about this
_INSERT_CHUNK = "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_SENDER = "INSERT INTO senders VALUES (?, ?, ?, ?, ?)"
_DELETE_SENDER = "DELETE FROM senders WHERE room = ? AND sender = ? AND hi = ?"
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


def _pack(fmt: str, values: Sequence[int]) -> bytes:
    return struct.pack(f">{len(values)}{fmt}", *values)


def _unpack(fmt: str, blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(blob) // struct.calcsize(fmt)}{fmt}", blob)


def _ranges(senders: Iterable[int], counters: Iterable[int]) -> dict[int, tuple[int, int]]:
    """sender -> (lowest, highest) counter, over one chunk's messages."""
    out: dict[int, tuple[int, int]] = {}
    for s, c in zip(senders, counters, strict=True):
        r = out.get(s)
        if r is None:
            out[s] = (c, c)
        elif c < r[0]:
            out[s] = (c, r[1])
        elif c > r[1]:
            out[s] = (r[0], c)
    return out


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
        # (room id, sender) -> an upper bound of the counters it has stored (loaded lazily;
        # only ever raised, so a rolled-back batch leaves it merely loose, never wrong)
        self._top: dict[tuple[int, int], int] = {}
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
                self._migrate(db, version)
            elif version > _SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"written by a newer relay (layout {version})")
            self.store_id = self._store_identity(db)
        except sqlite3.DatabaseError as err:
            raise StateError(f"cannot open the relay store {self.path}: {err}") from err
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)
        self._wdb = db
        for room_id, room, head in db.execute("SELECT id, room, head FROM rooms").fetchall():
            self._rooms[bytes(room)] = self._load_room(db, room_id, head)

    @staticmethod
    def _store_identity(db: sqlite3.Connection) -> bytes:
        """This store's id (protocol section 8): made once, when the store is new."""
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (os.urandom(STORE_ID_LEN),))
        (value,) = db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        if not isinstance(value, bytes) or len(value) != STORE_ID_LEN:
            raise sqlite3.DatabaseError("its store id is damaged")
        return value

    @staticmethod
    def _migrate(db: sqlite3.Connection, version: int) -> None:
        """Create layout 3, converting layout 1 or 2 (one row per message) in place."""
        old = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
        ).fetchone()
        # one transaction: executescript leaves the BEGIN open for the copy below
        db.executescript(f"BEGIN IMMEDIATE; {_MIGRATE_V1 if old and version < 2 else ''} {_SCHEMA}")
        try:
            if old:
                _copy_messages(db)
                db.execute("DROP TABLE messages")
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _open_reader_sync(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        self._rdb = db

    def _open_checkpointer_sync(self) -> None:
        self._cdb = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    @staticmethod
    def _load_room(db: sqlite3.Connection, room_id: int, head: int) -> _RoomState:
        low, count, size = db.execute(
            "SELECT MIN(first), COALESCE(SUM((key & ?) - first + 1), 0),"
            " COALESCE(SUM(LENGTH(data)), 0) FROM chunks WHERE key > ? AND key < ?",
            (_SEQ_MASK, room_id << _SEQ_BITS, (room_id + 1) << _SEQ_BITS),
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
                results = self._insert(db, batch)
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
        self._uncheckpointed += sum([len(p.sealed) for p in batch])
        if self._uncheckpointed >= _CHECKPOINT_BYTES and not self._checkpointing:
            self._start_checkpoint()
        return results

    def _restore(self, saved: dict[bytes, _RoomState]) -> None:
        self._rooms.update({room: _copy(state) for room, state in saved.items()})

    def _save(self, batch: Sequence[Publish]) -> dict[bytes, _RoomState]:
        rooms = self._rooms
        return {room: _copy(rooms[room]) for room in {p.room for p in batch} if room in rooms}

    def _insert(self, db: sqlite3.Connection, batch: Sequence[Publish]) -> list[Appended]:
        """BEGIN and insert `batch` (on the loop thread); the caller commits."""
        db.execute("BEGIN IMMEDIATE")
        try:
            return self._insert_rows(db, batch)
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

    def _insert_rows(self, db: sqlite3.Connection, batch: Sequence[Publish]) -> list[Appended]:
        rooms = self._rooms
        top = self._top
        results: list[Appended] = []
        # per room: its state, then the new messages' sealed bytes, senders, counters
        new: dict[bytes, tuple[_RoomState, list[bytes], list[int], list[int]]] = {}
        for p in batch:
            room, sender, counter = p.room, p.sender, p.counter
            entry = new.get(room)
            if entry is None:
                state = rooms.get(room)
                if state is None:
                    raise StateError("publish to a room with no bound roster")
                entry = new[room] = (state, [], [], [])
            state = entry[0]
            tk = (state.id, sender)
            high = top.get(tk)
            if high is None:
                high = top[tk] = self._load_top(db, state.id, sender)
            if counter <= high:  # not above every stored counter: look it up, exactly
                seq = _pending(entry, state, sender, counter)
                if seq is None:
                    seq = self._lookup(db, state, sender, counter)
                if seq is not None:
                    results.append(Appended(seq, True))
                    continue
            else:
                top[tk] = counter
            seq = state.head = state.head + 1
            entry[1].append(p.sealed)
            entry[2].append(sender)
            entry[3].append(counter)
            results.append(Appended(seq, False))
        now = time.time()
        chunks: list[tuple[int, int, bytes, bytes, bytes, float, bytes]] = []
        index: list[tuple[int, int, int, int, int]] = []
        heads: list[tuple[int, int]] = []
        for state, sealed, senders, counters in new.values():
            if not sealed:
                continue
            heads.append((state.head, state.id))
            first = state.head - len(sealed) + 1
            start = 0
            while start < len(sealed):  # chunks of about _CHUNK_BYTES
                end, total = start, 0
                while end < len(sealed) and (total < _CHUNK_BYTES or end == start):
                    total += len(sealed[end])
                    end += 1
                part = sealed[start:end] if start or end < len(sealed) else sealed
                ss, cs = senders[start:end], counters[start:end]
                key = (state.id << _SEQ_BITS) | (first + end - 1)
                data = b"".join(part)
                chunks.append(
                    (key, first + start, _pack("I", [len(m) for m in part]), _pack("H", ss),
                     _pack("Q", cs), now, data)
                )  # fmt: skip
                sid = state.id
                for s, (lo, hi) in _ranges(ss, cs).items():
                    index.append((sid, s, hi - _BIAS, lo - _BIAS, key))
                state.count += end - start
                state.size += total
                start = end
        if chunks:
            db.executemany(_INSERT_CHUNK, chunks)
            db.executemany(_INSERT_SENDER, index)
            db.executemany("UPDATE rooms SET head = ? WHERE id = ?", heads)
            keep = self.retention
            for state, sealed, _, _ in new.values():
                if sealed and (state.count > keep.max_messages or state.size > keep.max_bytes):
                    self._trim(db, state)
        return results

    @staticmethod
    def _load_top(db: sqlite3.Connection, room_id: int, sender: int) -> int:
        (hi,) = db.execute(
            "SELECT MAX(hi) FROM senders WHERE room = ? AND sender = ?", (room_id, sender)
        ).fetchone()
        return -1 if hi is None else hi + _BIAS

    @staticmethod
    def _lookup(db: sqlite3.Connection, state: _RoomState, sender: int, counter: int) -> int | None:
        """The seq of the stored message (sender, counter) of a room, or None."""
        biased = counter - _BIAS
        for (chunk,) in db.execute(
            "SELECT chunk FROM senders WHERE room = ? AND sender = ? AND hi >= ? AND lo <= ?",
            (state.id, sender, biased, biased),
        ).fetchall():
            row = db.execute(
                "SELECT first, senders, counters FROM chunks WHERE key = ?", (chunk,)
            ).fetchone()
            if row is None:
                continue
            first, ss, cs = row
            for i, (s, c) in enumerate(zip(_unpack("H", ss), _unpack("Q", cs), strict=True)):
                if s == sender and c == counter:
                    return int(first) + i
        return None

    def _trim(self, db: sqlite3.Connection, state: _RoomState) -> None:
        """Drop the oldest messages of a room until it is within the count and byte limits."""
        keep = self.retention
        base = state.id << _SEQ_BITS
        rows = db.execute(
            "SELECT key, sizes FROM chunks WHERE key > ? AND key < ? ORDER BY key",
            (base, base + (1 << _SEQ_BITS)),
        )
        whole: list[int] = []  # chunks to delete
        cut_into: tuple[int, int, int] | None = None  # key, messages dropped, bytes dropped
        count, size = state.count, state.size
        for key, sizes_blob in rows:
            sizes = _unpack("I", sizes_blob)
            dropped = freed = 0
            for length in sizes:
                if count <= keep.max_messages and size <= keep.max_bytes:
                    break
                count -= 1
                size -= length
                dropped += 1
                freed += length
            if dropped == len(sizes):
                whole.append(key)
                if count <= keep.max_messages and size <= keep.max_bytes:
                    break
                continue
            if dropped:
                cut_into = (key, dropped, freed)
            break
        rows.close()
        if whole:
            self._delete_chunks(db, state, whole[-1])
        if cut_into is not None:
            key, dropped, freed = cut_into
            first, sizes_blob, ss, cs, data = db.execute(
                "SELECT first, sizes, senders, counters, data FROM chunks WHERE key = ?", (key,)
            ).fetchone()
            ss, cs = _unpack("H", ss), _unpack("Q", cs)
            self._unindex(db, state.id, ss, cs)
            ss, cs = ss[dropped:], cs[dropped:]
            db.execute(
                "UPDATE chunks SET first = ?, sizes = ?, senders = ?, counters = ?, data = ?"
                " WHERE key = ?",
                (first + dropped, sizes_blob[4 * dropped :], _pack("H", ss), _pack("Q", cs),
                 data[freed:], key),
            )  # fmt: skip
            db.executemany(
                _INSERT_SENDER,
                [
                    (state.id, s, hi - _BIAS, lo - _BIAS, key)
                    for s, (lo, hi) in _ranges(ss, cs).items()
                ],
            )
        state.low += state.count - count
        state.count, state.size = count, size

    def _delete_chunks(self, db: sqlite3.Connection, state: _RoomState, upto: int) -> None:
        """Delete the room's chunks with key <= upto, and their `senders` rows."""
        base = state.id << _SEQ_BITS
        for ss, cs in db.execute(
            "SELECT senders, counters FROM chunks WHERE key > ? AND key <= ?", (base, upto)
        ).fetchall():
            self._unindex(db, state.id, _unpack("H", ss), _unpack("Q", cs))
        db.execute("DELETE FROM chunks WHERE key > ? AND key <= ?", (base, upto))

    @staticmethod
    def _unindex(
        db: sqlite3.Connection, room_id: int, senders: Sequence[int], counters: Sequence[int]
    ) -> None:
        db.executemany(
            _DELETE_SENDER,
            [(room_id, s, hi - _BIAS) for s, (_, hi) in _ranges(senders, counters).items()],
        )

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
        after = max(after, 0)

        def read() -> list[StoredMessage]:
            db = self._rdb
            if db is None:
                raise StateError("the relay store is closed")
            out: list[StoredMessage] = []
            total = 0
            cur = db.execute(
                "SELECT first, sizes, data FROM chunks WHERE key > ? AND key < ? ORDER BY key",
                (base + after, base + (1 << _SEQ_BITS)),
            )
            try:
                for first, sizes, data in cur:
                    seq, at = first, 0
                    for length in _unpack("I", sizes):
                        if seq > after:
                            out.append(StoredMessage(seq, bytes(data[at : at + length])))
                            total += length
                            if total >= max_bytes or len(out) >= limit:
                                return out
                        seq += 1
                        at += length
            finally:
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
        # grows with seq, so walk each room from its oldest chunk and stop early. All the
        # messages of a chunk were committed together, so chunks go whole.
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
                last, messages, freed = 0, 0, 0
                cur = db.execute(
                    "SELECT key, first, stored_at, LENGTH(data) FROM chunks"
                    " WHERE key > ? AND key < ? ORDER BY key",
                    (base, base + (1 << _SEQ_BITS)),
                )
                for key, first, stored_at, size in cur:
                    if stored_at >= cutoff:
                        break
                    last = key
                    messages += (key & _SEQ_MASK) - first + 1
                    freed += size
                cur.close()
                if not last:
                    continue
                self._delete_chunks(db, state, last)
                removed += messages
                state.count -= messages
                state.size -= freed
                state.low += messages
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._restore(saved)
            raise
        return removed


def _pending(
    entry: tuple[_RoomState, list[bytes], list[int], list[int]],
    state: _RoomState,
    sender: int,
    counter: int,
) -> int | None:
    """The seq given to (sender, counter) earlier in the batch being inserted, or None."""
    senders, counters = entry[2], entry[3]
    for i in range(len(senders)):
        if counters[i] == counter and senders[i] == sender:
            return state.head - len(senders) + 1 + i
    return None


def _copy_messages(db: sqlite3.Connection) -> None:
    """Layout 2 -> 3: each room's message rows become chunks (one per commit, as stored)."""
    group: list[tuple[int, int, int, int, bytes, float]] = []

    def flush() -> None:
        if not group:
            return
        room_id, first = group[0][0], group[0][1]
        last = group[-1][1]
        ss = [g[2] for g in group]
        cs = [g[3] for g in group]
        key = (room_id << _SEQ_BITS) | last
        db.execute(
            _INSERT_CHUNK,
            (key, first, _pack("I", [len(g[4]) for g in group]), _pack("H", ss), _pack("Q", cs),
             group[-1][5], b"".join([g[4] for g in group])),
        )  # fmt: skip
        db.executemany(
            _INSERT_SENDER,
            [(room_id, s, hi - _BIAS, lo - _BIAS, key) for s, (lo, hi) in _ranges(ss, cs).items()],
        )
        group.clear()

    cur = db.execute(
        "SELECT room, seq, sender, counter, sealed, stored_at FROM messages ORDER BY key"
    )
    size = 0
    for room_id, seq, sender, counter, sealed, stored_at in cur:
        if group and (
            room_id != group[-1][0]
            or seq != group[-1][1] + 1
            or stored_at != group[-1][5]
            or size >= _CHUNK_BYTES
        ):
            flush()
            size = 0
        group.append((room_id, seq, sender, counter, bytes(sealed), stored_at))
        size += len(sealed)
    flush()


def _copy(state: _RoomState) -> _RoomState:
    return _RoomState(state.id, state.head, state.low, state.count, state.size)
