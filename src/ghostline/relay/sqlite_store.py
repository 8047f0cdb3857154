"""The single-node backend: one SQLite file (WAL, synchronous=FULL), and the threads and
the lock around it. What is on disk and how each part is read and written lives in
`sqlite_schema` (the tables, opening), `sqlite_append` (a batch in, with exact dedupe),
`sqlite_retention` (the oldest messages out), `sqlite_rooms` (registering and retiring
rooms) and `sqlite_reads` (a room read back for a member who resumes).

Group commit: `append` inserts a batch on the event loop (plain C calls into SQLite, no
thread hand-off per row) and hands only the COMMIT, the fsync, to a dedicated writer
thread, which runs it without the GIL. While that commit is in flight the relay keeps
reading, and whatever arrives becomes the next batch (`rooms.RoomHub`). That batch is
inserted after this one is answered, not before (no pipelining): the
ACCEPTEDs go out a batch's insert sooner, and commits come out fewer and larger (at 10
rooms x 3 members, 100 B: about 850 messages per commit instead of 650, some 0.1 us less
relay CPU per message, and no less throughput). Handing the COMMIT over, the event loop
waits until the writer thread has taken it up (a thread wake-up, tens of microseconds):
otherwise the woken thread waits for the GIL while the loop goes on running Python, and
under load the fsync started 0.4-0.7 ms late, a fifth of a commit cycle (bench/
relaycycle.py times each part of the cycle). An
`asyncio.Lock` keeps every write (insert + commit, roster, expiry, removal) in order on
the one write connection.

Reads for resume run on a second thread with their own connection, so a member catching
up never delays a commit. WAL checkpoints run on a third thread and connection, off the
commit path (the writer's own automatic checkpoint is only a backstop).

Rooms are held: `bind_roster` holds a room for its connection until `release`. A room
nobody holds and with nothing stored is retired (`sqlite_rooms`) and leaves memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..errors import StateError
from . import sqlite_append, sqlite_reads, sqlite_retention, sqlite_rooms
from .backend import Appended, Backend, Publish, RelayHub, Roster, StoredMessage
from .config import Retention
from .logfmt import log_event
from .sqlite_schema import LAYOUT, RoomState, Saved, connect, open_store, restore
from .storefile import StoreDamaged, StoreLock, StoreUnavailable, lock_store, unlock_store

__all__ = ["LAYOUT", "SqliteBackend"]

T = TypeVar("T")
log = logging.getLogger("ghostline.relay")
_CHECKPOINT_BYTES = 16 * 2**20  # a background checkpoint after about this much is committed
# (less often costs less: a page written by several commits is copied once)
# The most the event loop waits for the writer thread to take up a COMMIT (seconds); it
# normally takes tens of microseconds, and after this the loop goes on regardless.
_COMMIT_START_WAIT = 0.005


class SqliteBackend(Backend):
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
        self._rooms: dict[bytes, RoomState] = {}
        self._rosters: dict[bytes, Roster] = {}
        self._uncheckpointed = 0  # bytes committed since the last background checkpoint
        self._checkpointing = False
        self._tidying: asyncio.Task[None] | None = None
        self._untidy = False  # a room may have become removable since the last tidy
        self._closing = False
        self._damage = sqlite_reads.DamageLog()

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
        self._wdb, self.store_id, self._rosters, self._rooms = open_store(self.path)
        # nothing holds a room yet: the empty ones go now
        empty = [(r, s) for r, s in self._rooms.items() if s.count == 0]
        for room, _ in empty:
            del self._rooms[room], self._rosters[room]
        if empty:
            try:
                sqlite_rooms.retire(self._wdb, [s for _, s in empty])
            except sqlite3.OperationalError:  # not the file's fault (busy, I/O): see open()
                raise
            except sqlite3.DatabaseError as err:  # corrupt, not a database
                raise StoreDamaged(self.path, str(err)) from err

    def _open_reader_sync(self) -> None:
        db = connect(self.path)
        db.execute("PRAGMA query_only=1")
        self._rdb = db

    def _open_checkpointer_sync(self) -> None:
        self._cdb = connect(self.path)

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

    def _read_db(self) -> sqlite3.Connection:
        if self._rdb is None:
            raise StateError("the relay store is closed")
        return self._rdb

    # --- rooms: rosters, holding, removal ----------------------------------------------

    async def roster(self, room: bytes) -> Roster | None:
        bound = self._rosters.get(room)
        if bound is not None:
            return bound
        return await self._read(lambda: sqlite_rooms.find_roster(self._read_db(), self.path, room))

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
        full = len(self._rooms) >= max_rooms
        bound, state = sqlite_rooms.bind(self._db(), self.path, room, roster, full=full)
        self._rosters[room] = bound
        self._rooms[room] = state

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
                    await asyncio.shield(self._write(functools.partial(self._retire_sync, states)))
                except Exception as err:  # they stay on disk; a later bind loads them back
                    log_event(log, "store_failed", level=logging.ERROR, error=repr(err))

    def _retire_sync(self, states: Sequence[RoomState]) -> None:
        sqlite_rooms.retire(self._db(), states)

    # --- messages ----------------------------------------------------------------------

    async def append(self, batch: Sequence[Publish]) -> list[Appended]:
        await self._lock.acquire()
        try:
            db = self._db()
            saved: Saved = []  # each room, as it was
            try:
                results, stored = sqlite_append.insert(
                    db, self._rooms, self.retention, batch, saved
                )
            except BaseException:
                restore(saved)
                raise
            self._uncheckpointed += stored
            # straight to the writer thread: the fsync starts now, not a loop turn later
            # and not when the loop next lets go of the GIL (see the module's comment)
            started = threading.Event()

            def run() -> None:
                started.set()
                sqlite_append.commit(db)

            commit = asyncio.get_running_loop().run_in_executor(self._writer, run)
            started.wait(_COMMIT_START_WAIT)
        except BaseException:
            self._lock.release()
            raise

        def finished(fut: asyncio.Future[None]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                restore(saved)
            self._lock.release()

        commit.add_done_callback(finished)
        # shield: a cancelled caller must not release the lock while the commit still runs
        await asyncio.shield(commit)
        if self._uncheckpointed >= _CHECKPOINT_BYTES and not self._checkpointing:
            self._start_checkpoint()
        return results

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
        room_id, after = state.id, max(after, 0)

        def read() -> list[StoredMessage]:
            damaged: list[tuple[int, int]] = []
            try:
                db = self._read_db()
                return sqlite_reads.read_after(db, room_id, after, limit, max_bytes, damaged)
            finally:
                if damaged:
                    self._damage.report(room, damaged)

        return await self._read(read)

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
        db = self._db()
        states = list(self._rooms.values())
        saved: Saved = [(s, s.head, s.count, s.size) for s in states]
        db.execute("BEGIN IMMEDIATE")
        try:
            removed = sqlite_retention.expire(db, states, now - self.retention.max_age)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            restore(saved)
            raise
        return removed
