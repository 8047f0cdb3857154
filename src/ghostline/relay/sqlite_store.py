"""The single-node backend: one SQLite file (WAL, synchronous=FULL).

Group commit, pipelined: `append` inserts a batch on the event loop (plain C calls into
SQLite, no thread hand-off per row) and hands only the COMMIT, the fsync, to a dedicated
writer thread, which runs it without the GIL. While that commit is in flight the relay
keeps reading, and whatever arrives becomes the next batch (`rooms.RoomHub`). An
`asyncio.Lock` keeps every write (insert + commit, roster, expiry, removal) in order on
the one write connection.

Reads for resume run on a second thread with their own connection, so a member catching
up never delays a commit. WAL checkpoints run on a third thread and connection, off the
commit path (the writer's own automatic checkpoint is only a backstop).

Layout (4): a commit stores each room's messages as ONE row of `chunks` (chunks.py),
keyed by `room id << 40 | seq of its last message`: the sealed messages concatenated,
their lengths, each one's (sender, counter), a checksum per message and one over the
rest. So a room's messages are one contiguous key range, appending touches its end, and
storing a message costs a few bytes of a row rather than a row and an index entry.
Duplicates are recognised without a per-message index: `senders` holds, per chunk and
sender, the range of that sender's counters in the chunk, and each room's state keeps
in memory the highest counter each sender ever had stored. A counter above it is new
without a look-up (senders count up); any other is looked up exactly. Each room's stored
messages are a contiguous range ending at its head: retention removes only the oldest.

Rooms are held: `bind_roster` holds a room for its connection until `release`. A room
nobody holds and with nothing stored is removed from `rooms` (the table `max_rooms`
counts) and memory; its roster and head stay in `retired`, so that when its group comes
back its numbering goes on where it stopped (a client's cursor stays right) and nobody
else can claim its room id with another roster.

A message whose checksum fails is never served: `read_after` skips its seq, and the
log says once which seqs of which room were dropped (docs/DEPLOYMENT.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import TypeVar

from ..errors import StateError
from ..protocol.frames import STORE_ID_LEN
from . import chunks
from .backend import (
    Appended,
    Backend,
    Publish,
    RelayHub,
    RoomLimitReached,
    Roster,
    StoredMessage,
)
from .chunks import SEQ_BITS, SEQ_MASK
from .config import Retention
from .logfmt import log_event
from .storefile import (
    StoreDamaged,
    StoreLayoutError,
    StoreLock,
    StoreUnavailable,
    check_integrity,
    lock_store,
    make_private,
    unlock_store,
)

T = TypeVar("T")
log = logging.getLogger("ghostline.relay")
# An `Appended` made without the Python-level __new__ namedtuple() gives it (once per
# message, on the hot path).
_new_appended = tuple.__new__

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

_KEY = 32
_MAX_ROOM_ID = 1 << 22  # keys stay below 2**62
_BIAS = 1 << 63  # counters are u64; SQLite integers are signed
_CHUNK_BYTES = 256 * 1024  # a room's share of one commit is split into chunks of about this
_CHUNK_COLUMNS = "key, first, sizes, senders, counters, sums, crc"
_INSERT_CHUNK = "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_SENDER = "INSERT INTO senders VALUES (?, ?, ?, ?, ?)"
_DELETE_SENDER = "DELETE FROM senders WHERE room = ? AND sender = ? AND hi = ?"
_CHECKPOINT_BYTES = 16 * 2**20  # a background checkpoint after about this much is committed
# (less often costs less: a page written by several commits is copied once)
_AUTOCHECKPOINT_PAGES = 16384  # the writer's own checkpoint (64 MiB of WAL): a backstop
_JOURNAL_SIZE_LIMIT = 64 * 2**20


@dataclass(slots=True, eq=False)
class _RoomState:
    """The exact view of one room's stored range (changed only under the write lock)."""

    id: int
    head: int
    count: int
    size: int  # bytes of sealed messages stored
    users: int = 0  # connections holding the room (bind_roster .. release), loop only
    # sender -> an upper bound of the counters it has stored (loaded lazily; only ever
    # raised, so a rolled-back batch leaves it merely loose, never wrong)
    top: dict[int, int] = field(default_factory=dict)


class SqliteBackend(Backend):
    pipelined_appends = True  # the next batch's inserts and fsync overlap this fan-out

    def __init__(self, path: str | os.PathLike[str], retention: Retention | None = None) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="relay-store-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="relay-store-reader")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="relay-store-checkpoint")
        self._lockfd: StoreLock | None = None
        self._wdb: sqlite3.Connection | None = None
        self._rdb: sqlite3.Connection | None = None
        self._cdb: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()  # one write at a time on the write connection
        # Both changed only while holding _lock (the write thread sets them together,
        # roster first); the loop reads them. A room is in both or in neither.
        self._rooms: dict[bytes, _RoomState] = {}
        self._rosters: dict[bytes, Roster] = {}
        self._uncheckpointed = 0  # bytes committed since the last background checkpoint
        self._checkpointing = False
        self._tidying: asyncio.Task[None] | None = None
        self._untidy = False  # a room may have become removable since the last tidy
        self._closing = False
        self._reported: dict[bytes, set[int]] = {}  # room -> damaged seqs already logged

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self, hub: RelayHub) -> None:
        """Lock, check and open (creating if needed) the store. A single node needs
        nothing from `hub`. Raises StoreLocked, StoreDamaged, StoreLayoutError or
        StoreUnavailable."""
        try:
            self._lockfd = lock_store(self.path)
            try:
                await self._write(self._open_sync)
                await self._read(self._open_reader_sync)
                await asyncio.get_running_loop().run_in_executor(
                    self._checkpointer, self._open_checkpointer_sync
                )
            except BaseException:
                await self._close_connections()
                raise
        except OSError as err:
            raise StoreUnavailable(self.path, err.strerror or str(err)) from err
        except sqlite3.OperationalError as err:  # e.g. disk I/O error, unable to open
            raise StoreUnavailable(self.path, str(err)) from err

    def _open_sync(self) -> None:
        make_private(self.path)  # before SQLite, which gives -wal and -shm the file's mode
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._wdb = db
        check_integrity(db, self.path)
        try:
            (layout,) = db.execute("PRAGMA user_version").fetchone()
            new = layout == 0 and not db.execute("SELECT 1 FROM sqlite_master").fetchone()
            if not new and layout != LAYOUT:  # refused before anything is written
                raise StoreLayoutError(self.path, layout, LAYOUT)
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
                raise StoreDamaged(self.path, "its store id is missing or damaged")
            self.store_id = row[0]
            rows = db.execute("SELECT id, room, roster, head FROM rooms").fetchall()
            for room_id, room, roster, head in rows:
                self._rosters[bytes(room)] = _split_roster(bytes(roster))
                self._rooms[bytes(room)] = self._load_room(db, room_id, head)
            # nothing holds a room yet: the empty ones go now
            empty = [(r, s) for r, s in self._rooms.items() if s.count == 0]
            for room, _ in empty:
                del self._rooms[room], self._rosters[room]
            if empty:
                self._remove_sync([s for _, s in empty])
        except sqlite3.OperationalError:  # not the file's fault (busy, I/O): see open()
            raise
        except sqlite3.DatabaseError as err:  # corrupt, not a database
            raise StoreDamaged(self.path, str(err)) from err

    def _open_reader_sync(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        self._rdb = db

    def _open_checkpointer_sync(self) -> None:
        self._cdb = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    @staticmethod
    def _load_room(db: sqlite3.Connection, room_id: int, head: int) -> _RoomState:
        # counted from the blobs' lengths, which stay sane even in a damaged chunk
        count, size = db.execute(
            "SELECT COALESCE(SUM(LENGTH(sizes) / 4), 0), COALESCE(SUM(LENGTH(data)), 0)"
            " FROM chunks WHERE key > ? AND key < ?",
            (room_id << SEQ_BITS, (room_id + 1) << SEQ_BITS),
        ).fetchone()
        return _RoomState(id=room_id, head=head, count=count, size=size)

    async def close(self) -> None:
        self._closing = True
        if self._tidying is not None:
            with contextlib.suppress(Exception):
                await self._tidying
        await self._close_connections()
        for pool in (self._writer, self._reader, self._checkpointer):
            pool.shutdown(wait=True)

    async def _close_connections(self) -> None:
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
        if self._lockfd is not None:
            unlock_store(self._lockfd)
            self._lockfd = None

    async def _write(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the writer thread; the caller holds `_lock`."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def _locked_write(self, fn: Callable[[], T]) -> T:
        async with self._lock:
            # shield: a cancelled caller must not release the lock while fn still runs
            return await asyncio.shield(self._write(fn))

    async def _read(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn)

    def _db(self) -> sqlite3.Connection:
        if self._wdb is None:
            raise StateError("the relay store is closed")
        return self._wdb

    # --- rooms: rosters, holding, removal ----------------------------------------------

    async def roster(self, room: bytes) -> Roster | None:
        bound = self._rosters.get(room)
        if bound is not None:
            return bound

        def find() -> bytes | None:
            db = self._rdb
            if db is None:
                raise StateError("the relay store is closed")
            row = db.execute(
                "SELECT roster FROM rooms WHERE room = ?1"
                " UNION ALL SELECT roster FROM retired WHERE room = ?1 LIMIT 1",
                (room,),
            ).fetchone()
            return None if row is None else bytes(row[0])

        blob = await self._read(find)
        return None if blob is None else _split_roster(blob)

    async def bind_roster(self, room: bytes, roster: Roster, *, max_rooms: int) -> Roster:
        while True:
            state = self._rooms.get(room)
            if state is not None:  # held from here, with no await in between
                state.users += 1
                return self._rosters[room]
            # registers the room, or brings it back from disk; a tidy may remove it again
            # before this resumes, hence the loop
            await self._locked_write(lambda: self._bind_sync(room, roster, max_rooms))

    def release(self, room: bytes) -> None:
        state = self._rooms.get(room)
        if state is None or self._closing:
            return
        state.users -= 1
        if state.users <= 0 and state.count == 0:
            self._schedule_tidy()

    def _bind_sync(self, room: bytes, roster: Roster, max_rooms: int) -> None:
        if room in self._rooms:
            return
        db = self._db()
        row = db.execute("SELECT id, roster, head FROM rooms WHERE room = ?", (room,)).fetchone()
        if row is not None:  # on disk but not in memory (a removal that failed)
            room_id, blob, head = row
            self._rosters[room] = _split_roster(bytes(blob))
            self._rooms[room] = self._load_room(db, room_id, head)
            return
        if len(self._rooms) >= max_rooms:
            raise RoomLimitReached()
        retired = db.execute("SELECT roster, head FROM retired WHERE room = ?", (room,)).fetchone()
        blob, head = (bytes(retired[0]), retired[1]) if retired else (b"".join(roster), 0)
        db.execute("BEGIN IMMEDIATE")
        try:
            room_id = self._free_room_id(db)
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
        self._rosters[room] = _split_roster(blob)
        self._rooms[room] = _RoomState(id=room_id, head=head, count=0, size=0)

    @staticmethod
    def _free_room_id(db: sqlite3.Connection) -> int:
        (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM rooms").fetchone()
        if top + 1 < _MAX_ROOM_ID:
            return int(top) + 1
        # the ids above are used up (rooms come and go): the lowest free one
        row = db.execute(
            "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE id = 1) UNION ALL"
            " SELECT r.id + 1 FROM rooms r WHERE r.id + 1 < ?"
            " AND NOT EXISTS (SELECT 1 FROM rooms s WHERE s.id = r.id + 1) LIMIT 1",
            (_MAX_ROOM_ID,),
        ).fetchone()
        if row is None:
            raise RoomLimitReached()
        return int(row[0])

    def _schedule_tidy(self) -> None:
        self._untidy = True
        if self._tidying is None or self._tidying.done():
            self._tidying = asyncio.ensure_future(self._tidy())

    async def _tidy(self) -> None:
        """Remove every room that nobody holds and that has nothing stored."""
        while self._untidy:
            self._untidy = False
            async with self._lock:
                gone = [r for r, s in self._rooms.items() if s.users <= 0 and s.count == 0]
                if not gone:
                    continue
                states = [self._rooms.pop(room) for room in gone]
                for room in gone:  # from memory at once: a new bind registers it anew
                    del self._rosters[room]
                try:
                    await asyncio.shield(self._write(functools.partial(self._remove_sync, states)))
                except Exception as err:  # they stay on disk; a later bind loads them back
                    log_event(log, "store_failed", level=logging.ERROR, error=repr(err))

    def _remove_sync(self, states: Sequence[_RoomState]) -> None:
        db = self._db()
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
                db.execute(
                    "DELETE FROM chunks WHERE key > ? AND key < ?", (base, base + 2**SEQ_BITS)
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # --- messages ----------------------------------------------------------------------

    async def append(self, batch: Sequence[Publish]) -> list[Appended]:
        await self._lock.acquire()
        try:
            db = self._db()
            saved: list[tuple[_RoomState, int, int, int]] = []  # each room, as it was
            try:
                results = self._insert(db, batch, saved)
            except BaseException:
                _restore(saved)
                raise
            # straight to the writer thread: the fsync starts now, not a loop turn later
            commit = asyncio.get_running_loop().run_in_executor(self._writer, self._commit_sync)
        except BaseException:
            self._lock.release()
            raise

        def finished(fut: asyncio.Future[int]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                _restore(saved)
            self._lock.release()

        commit.add_done_callback(finished)
        # shield: a cancelled caller must not release the lock while the commit still runs
        await asyncio.shield(commit)
        if self._uncheckpointed >= _CHECKPOINT_BYTES and not self._checkpointing:
            self._start_checkpoint()
        return results

    def _insert(
        self,
        db: sqlite3.Connection,
        batch: Sequence[Publish],
        saved: list[tuple[_RoomState, int, int, int]],
    ) -> list[Appended]:
        """BEGIN and insert `batch` (on the loop thread); the caller commits. `saved`
        gets each room's state as it was before, for `_restore` if the commit fails."""
        db.execute("BEGIN IMMEDIATE")
        try:
            return self._insert_rows(db, batch, saved)
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
        self,
        db: sqlite3.Connection,
        batch: Sequence[Publish],
        saved: list[tuple[_RoomState, int, int, int]],
    ) -> list[Appended]:
        rooms = self._rooms
        results: list[Appended] = []
        add = results.append
        # per room: its state, then the new messages' sealed bytes, senders, counters
        new: dict[bytes, tuple[_RoomState, list[bytes], list[int], list[int]]] = {}
        last: bytes | None = None  # the room of the previous message (runs share it)
        entry: tuple[_RoomState, list[bytes], list[int], list[int]]
        state: _RoomState
        top: dict[int, int]
        room_sealed: list[bytes]
        room_senders: list[int]
        room_counters: list[int]
        for room, sender, counter, sealed in batch:  # the hot path: once per message
            if room is not last:
                seen = new.get(room)
                if seen is None:
                    found = rooms.get(room)
                    if found is None:
                        raise StateError("publish to a room with no bound roster")
                    saved.append((found, found.head, found.count, found.size))
                    seen = new[room] = (found, [], [], [])
                entry = seen
                state, room_sealed, room_senders, room_counters = entry
                top = state.top
                last = room
            high = top.get(sender)
            if high is None:
                high = top[sender] = self._load_top(db, state.id, sender)
            if counter <= high:  # not above every stored counter: look it up, exactly
                seq = _pending(entry, state, sender, counter)
                if seq is None:
                    seq = self._lookup(db, state, sender, counter)
                if seq is not None:
                    add(_new_appended(Appended, (seq, True, ())))
                    continue
            else:
                top[sender] = counter
            seq = state.head = state.head + 1
            room_sealed.append(sealed)
            room_senders.append(sender)
            room_counters.append(counter)
            add(_new_appended(Appended, (seq, False, ())))
        now = time.time()
        rows: list[chunks.ChunkRow] = []
        index: list[tuple[int, int, int, int, int]] = []
        heads: list[tuple[int, int]] = []
        for state, messages, senders, counters in new.values():
            if not messages:
                continue
            heads.append((state.head, state.id))
            first = state.head - len(messages) + 1
            ends = list(accumulate(map(len, messages)))  # where each message ends
            start = 0
            while start < len(messages):  # chunks of about _CHUNK_BYTES
                before = ends[start - 1] if start else 0
                # through the message that brings the chunk to _CHUNK_BYTES, or the last
                end = min(bisect_left(ends, before + _CHUNK_BYTES, start) + 1, len(messages))
                total = ends[end - 1] - before
                part = messages[start:end] if start or end < len(messages) else messages
                ss, cs = senders[start:end], counters[start:end]
                key = (state.id << SEQ_BITS) | (first + end - 1)
                rows.append(chunks.build(key, first + start, part, ss, cs, now))
                sid = state.id
                for s, (lo, hi) in chunks.ranges(ss, cs).items():
                    index.append((sid, s, hi - _BIAS, lo - _BIAS, key))
                state.count += end - start
                state.size += total
                self._uncheckpointed += total
                start = end
        if rows:
            db.executemany(_INSERT_CHUNK, rows)
            db.executemany(_INSERT_SENDER, index)
            db.executemany("UPDATE rooms SET head = ? WHERE id = ?", heads)
            keep = self.retention
            for state, messages, _, _ in new.values():
                if messages and (state.count > keep.max_messages or state.size > keep.max_bytes):
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
        """The seq of the stored message (sender, counter) of a room, or None.
        A damaged chunk is not trusted: what it may hold counts as not held."""
        biased = counter - _BIAS
        for (chunk,) in db.execute(
            "SELECT chunk FROM senders WHERE room = ? AND sender = ? AND hi >= ? AND lo <= ?",
            (state.id, sender, biased, biased),
        ).fetchall():
            row = db.execute(
                f"SELECT {_CHUNK_COLUMNS}, LENGTH(data) FROM chunks WHERE key = ?", (chunk,)
            ).fetchone()
            if row is None or chunks.checked_sizes(*row) is None:
                continue
            _, first, _, ss, cs, _, _, _ = row
            for i, (s, c) in enumerate(zip(chunks.unpack("H", ss), chunks.unpack("Q", cs))):  # noqa: B905
                if s == sender and c == counter:
                    return int(first) + i
        return None

    def _trim(self, db: sqlite3.Connection, state: _RoomState) -> None:
        """Drop the oldest messages of a room until it is within the count and byte limits."""
        keep = self.retention
        base = state.id << SEQ_BITS
        while state.count > keep.max_messages or state.size > keep.max_bytes:
            row = db.execute(
                f"SELECT {_CHUNK_COLUMNS}, stored_at, data FROM chunks"
                " WHERE key > ? AND key < ? ORDER BY key LIMIT 1",
                (base, base + (1 << SEQ_BITS)),
            ).fetchone()
            if row is None:
                break
            key, first, sizes_blob, ss, cs, sums, crc, _, data = row
            sizes = chunks.checked_sizes(key, first, sizes_blob, ss, cs, sums, crc, len(data))
            if sizes is None:  # damaged: it goes whole, and the room is counted again
                self._delete_chunks(db, state, key)
                fresh = self._load_room(db, state.id, state.head)
                state.count, state.size = fresh.count, fresh.size
                continue
            dropped = freed = 0
            count, size = state.count, state.size
            for length in sizes:
                if count <= keep.max_messages and size <= keep.max_bytes:
                    break
                count -= 1
                size -= length
                dropped += 1
                freed += length
            if dropped == len(sizes):
                self._delete_chunks(db, state, key)
            else:
                self._unindex(db, state.id, chunks.unpack("H", ss), chunks.unpack("Q", cs))
                row = chunks.cut(row, dropped, freed)
                db.execute(
                    "UPDATE chunks SET first = ?, sizes = ?, senders = ?, counters = ?,"
                    " sums = ?, crc = ?, data = ? WHERE key = ?",
                    (*row[1:7], row[8], key),
                )
                ss, cs = chunks.unpack("H", row[3]), chunks.unpack("Q", row[4])
                db.executemany(
                    _INSERT_SENDER,
                    [
                        (state.id, s, hi - _BIAS, lo - _BIAS, key)
                        for s, (lo, hi) in chunks.ranges(ss, cs).items()
                    ],
                )
            state.count, state.size = count, size

    def _delete_chunks(self, db: sqlite3.Connection, state: _RoomState, upto: int) -> None:
        """Delete the room's chunks with key <= upto, and their `senders` rows."""
        base = state.id << SEQ_BITS
        for key, ss, cs in db.execute(
            "SELECT key, senders, counters FROM chunks WHERE key > ? AND key <= ?", (base, upto)
        ).fetchall():
            if len(ss) * 4 == len(cs):
                self._unindex(db, state.id, chunks.unpack("H", ss), chunks.unpack("Q", cs))
            else:  # damaged: find its index rows the slow way
                db.execute("DELETE FROM senders WHERE room = ? AND chunk = ?", (state.id, key))
        db.execute("DELETE FROM chunks WHERE key > ? AND key <= ?", (base, upto))

    @staticmethod
    def _unindex(
        db: sqlite3.Connection, room_id: int, senders: Sequence[int], counters: Sequence[int]
    ) -> None:
        db.executemany(
            _DELETE_SENDER,
            [(room_id, s, hi - _BIAS) for s, (_, hi) in chunks.ranges(senders, counters).items()],
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
        base = state.id << SEQ_BITS
        after = max(after, 0)

        def read() -> list[StoredMessage]:
            db = self._rdb
            if db is None:
                raise StateError("the relay store is closed")
            out: list[StoredMessage] = []
            damaged: list[tuple[int, int]] = []  # seq ranges not served
            total = 0
            last = after
            cur = db.execute(
                f"SELECT {_CHUNK_COLUMNS}, data FROM chunks WHERE key > ? AND key < ? ORDER BY key",
                (base + after, base + (1 << SEQ_BITS)),
            )
            try:
                for key, first, sizes, ss, cs, sums, crc, data in cur:
                    lengths = chunks.checked_sizes(key, first, sizes, ss, cs, sums, crc, len(data))
                    previous, last = last, key & SEQ_MASK
                    if lengths is None:
                        damaged.append((previous + 1, last))
                        continue
                    for seq, sealed in chunks.messages_after(first, lengths, sums, data, after):
                        if sealed is None:
                            damaged.append((seq, seq))
                            continue
                        out.append(StoredMessage(seq, sealed))
                        total += len(sealed)
                        if total >= max_bytes or len(out) >= limit:
                            return out
            finally:
                cur.close()
                if damaged:
                    self._report_damage(room, damaged)
            return out

        return await self._read(read)

    def _report_damage(self, room: bytes, damaged: list[tuple[int, int]]) -> None:
        """Log the seqs of `room` found damaged, each once (reader thread only)."""
        seen = self._reported.setdefault(room, set())
        # a range's last seq names it: a damaged chunk's first seq depends on the read
        fresh = [(lo, hi) for lo, hi in damaged if hi not in seen]
        if not fresh:
            return
        seen.update(hi for _, hi in fresh)
        seqs = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in fresh)
        log_event(
            log, "store_damaged", level=logging.ERROR, room=room.hex(), seqs=seqs,
            action="not served (checksum mismatch)",
        )  # fmt: skip

    async def head(self, room: bytes) -> int:
        # Under the write lock, so head is never behind a commit in flight.
        async with self._lock:
            state = self._rooms.get(room)
            return state.head if state is not None else 0

    async def expire(self, now: float) -> int:
        removed = await self._locked_write(lambda: self._expire_sync(now))
        if removed and any(s.count == 0 and s.users <= 0 for s in self._rooms.values()):
            self._schedule_tidy()
        return removed

    def _expire_sync(self, now: float) -> int:
        # No index on stored_at (it would cost every insert): within a room stored_at
        # grows with seq, so walk each room from its oldest chunk and stop early. All the
        # messages of a chunk were committed together, so chunks go whole.
        db = self._db()
        cutoff = now - self.retention.max_age
        removed = 0
        states = list(self._rooms.values())
        saved = [(s, s.head, s.count, s.size) for s in states]
        db.execute("BEGIN IMMEDIATE")
        try:
            for state in states:
                if state.count == 0:
                    continue
                base = state.id << SEQ_BITS
                last, messages, freed = 0, 0, 0
                cur = db.execute(
                    "SELECT key, LENGTH(sizes) / 4, stored_at, LENGTH(data) FROM chunks"
                    " WHERE key > ? AND key < ? ORDER BY key",
                    (base, base + (1 << SEQ_BITS)),
                )
                for key, count, stored_at, size in cur:
                    if stored_at >= cutoff:
                        break
                    last = key
                    messages += count
                    freed += size
                cur.close()
                if not last:
                    continue
                self._delete_chunks(db, state, last)
                removed += messages
                state.count -= messages
                state.size -= freed
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            _restore(saved)
            raise
        return removed


def _split_roster(blob: bytes) -> Roster:
    return tuple(blob[i : i + _KEY] for i in range(0, len(blob), _KEY))


def _restore(saved: list[tuple[_RoomState, int, int, int]]) -> None:
    for state, head, count, size in saved:
        state.head, state.count, state.size = head, count, size


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
