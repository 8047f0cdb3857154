"""What an operator does to a stopped relay's SQLite store: give it a new store id, and
restore a backup into it (with a new store id).

Why a restored store needs a new id: a backup holds an older head than the store it
replaces. Were its id kept, members that had read past that head would resume from
their cursor and silently skip the new messages that now take the seqs they already
passed. With a new id, every member sees another store in WELCOME, reads it from its
start and drops by `(sender, counter)` what it already has (docs/PROTOCOL.md section 8):
nothing is skipped, nothing shown twice.

Both hold the store's lock (`storefile.lock_store`) while they work, so they refuse a
store a relay is serving, and check what they read as the relay does at start.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import fsync_path
from ..protocol.frames import STORE_ID_LEN
from .sqlite_schema import LAYOUT, checked_rooms
from .storefile import (
    StoreDamaged,
    StoreLayoutError,
    StoreUnavailable,
    check_integrity,
    lock_store,
    make_private,
    unlock_store,
)

_SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True)
class Renewed:
    store: Path
    old_id: bytes
    new_id: bytes
    set_aside: Path | None = None  # restore: where the store it replaced went


def renew_store_id(store: Path) -> Renewed:
    """Give the stopped relay store `store` a new store id. Raises StoreLocked while a
    relay holds it, StoreUnavailable when it is missing, StoreDamaged or
    StoreLayoutError when a relay would refuse it too."""
    if not store.is_file() or store.stat().st_size == 0:
        raise StoreUnavailable(store, "there is no relay store there")
    lock = lock_store(store)
    try:
        db = _connect(store)
        try:
            old = _checked(db, store)
            new = _new_id(db)
        finally:
            db.close()
    finally:
        unlock_store(lock)
    return Renewed(store, old, new)


def restore_store(backup: Path, store: Path) -> Renewed:
    """Copy the relay store backup `backup` to `store` with a new store id. A store
    already at `store` (and its -wal and -shm) is moved aside first, to
    `STORE.before-restore-<time>`, never deleted. The relay must be stopped."""
    if not backup.is_file():
        raise StoreUnavailable(backup, "there is no file there")
    replaced = store.is_file() and store.stat().st_size > 0
    lock = lock_store(store)  # creates an empty `store` if there was none
    try:
        source = _connect(backup.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            old = _checked(source, backup)
            staged = store.with_name(store.name + ".restoring")
            _remove(staged)
            make_private(staged)
            copy = _connect(staged)
            try:
                source.backup(copy)
                new = _new_id(copy)
            finally:
                copy.close()
        finally:
            source.close()
        fsync_path(staged)
        aside = None
        if replaced:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            aside = store.with_name(f"{store.name}.before-restore-{stamp}")
            os.replace(store, aside)
            for suffix in _SIDE_FILES:  # SQLite would apply an old -wal to the new file
                side = store.with_name(store.name + suffix)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + suffix))
        else:
            for suffix in _SIDE_FILES:
                _remove(store.with_name(store.name + suffix))
        os.replace(staged, store)
        fsync_path(store.parent)
    finally:
        unlock_store(lock)
    return Renewed(store, old, new, aside)


def _connect(target: str | Path, *, uri: bool = False) -> sqlite3.Connection:
    try:
        return sqlite3.connect(target, isolation_level=None, uri=uri)
    except sqlite3.Error as err:
        raise StoreUnavailable(Path(str(target)), str(err)) from err


def _checked(db: sqlite3.Connection, path: Path) -> bytes:
    """Check `db` as the relay does at start; returns its store id."""
    check_integrity(db, path)
    try:
        (layout,) = db.execute("PRAGMA user_version").fetchone()
        if layout != LAYOUT:
            raise StoreLayoutError(path, layout, LAYOUT)
        row = db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        checked_rooms(db, path)
    except sqlite3.DatabaseError as err:
        raise StoreDamaged(path, str(err)) from err
    if row is None or not isinstance(row[0], bytes) or len(row[0]) != STORE_ID_LEN:
        raise StoreDamaged(path, "its store id is missing or damaged")
    return bytes(row[0])


def _new_id(db: sqlite3.Connection) -> bytes:
    new = os.urandom(STORE_ID_LEN)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE meta SET value = ? WHERE key = 'store_id'", (new,))
    db.execute("COMMIT")
    return new


def _remove(path: Path) -> None:
    for name in (path, *(path.with_name(path.name + s) for s in _SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            name.unlink()
