"""The relay store's files on disk: one owner at a time, private modes, checked on open.

- Lock: a relay holds `flock(LOCK_EX)` on `STORE.lock`, a file beside the store that
  holds the owner's pid. A lock file rather than the store itself: SQLite keeps its
  own POSIX (fcntl) locks on the database file, and where flock is emulated with fcntl
  locks (NFS) a lock on the store would mix with SQLite's, and SQLite's closing of its
  descriptors would drop it. The kernel releases a flock when its process dies
  (SIGKILL included), so a lock is never stale; the pid inside only names the owner.
  The lock file is never removed: removing it would let a third relay lock a new file
  while the second still waits on the old one. The lock file is named after the store's
  real path (symbolic links resolved), and the database file itself is flocked too: on
  a local file system flock and SQLite's fcntl locks do not interact, so the same
  store reached through another name (a symbolic or a hard link) is still refused.
- Modes: every file the store uses (the database, its -wal and -shm, the lock) is made
  0600 and every directory created for it 0700, whatever the umask. SQLite gives the
  -wal and -shm files the database file's mode, so the database is created 0600 before
  SQLite first opens it.
- Checks: SQLite's integrity check, then the layout version. A store that fails either
  is refused, never served in part (docs/PROTOCOL.md section 8).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from pathlib import Path

from ..errors import LocalError
from ..fsutil import make_private_dirs

PRIVATE_FILE = 0o600
_SIDE_FILES = ("-wal", "-shm")


class StoreLocked(LocalError):
    """Another relay process holds the store."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f"{path} is in use by relay process {pid if pid else '(unknown)'}")
        self.path = path
        self.pid = pid


class StoreUnavailable(LocalError):
    """The store's file or directory cannot be created or opened (permissions, a disk)."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"cannot open {path}: {detail}")
        self.path = path
        self.detail = detail


class StoreDamaged(LocalError):
    """The store fails SQLite's integrity check, cannot be read as a database, or holds
    a row out of range."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path} is damaged: {detail}")
        self.path = path
        self.detail = detail


class StoreLayoutError(LocalError):
    """The store was written in a layout this relay does not read."""

    def __init__(self, path: Path, found: int, expected: int) -> None:
        super().__init__(f"{path} has layout {found}; this relay reads layout {expected}")
        self.path = path
        self.found = found  # 0: not a relay store at all
        self.expected = expected


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


StoreLock = tuple[int, int]  # descriptors of the lock file and of the database file


def lock_store(store: Path) -> StoreLock:
    """Take the store's lock for this process; returns the descriptors that hold it.

    Raises StoreLocked (naming the holder's pid when it can) when another process holds
    the store, under this name or any other.
    """
    make_private_dirs(store.parent)
    real = Path(os.path.realpath(store))
    fd = _flocked(lock_path(real), store)
    try:
        db = _flocked(real, store, name_holder=False)  # held under another name
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, db


def _flocked(path: Path, store: Path, *, name_holder: bool = True) -> int:
    """`path` opened (created 0600 if missing) and flocked; StoreLocked if it is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise StoreLocked(store, _read_pid(fd) if name_holder else None) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock_store(lock: StoreLock) -> None:
    for fd in lock:
        os.close(fd)  # closing the last descriptor of an open file releases its flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def make_private(store: Path) -> None:
    """Create the database file 0600 if it is missing; make it and its side files 0600."""
    fd = os.open(store, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    for suffix in _SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(store.with_name(store.name + suffix), PRIVATE_FILE)


def check_integrity(db: sqlite3.Connection, store: Path) -> None:
    """SQLite's full integrity check (every page, every index); raises StoreDamaged."""
    try:
        rows = db.execute("PRAGMA integrity_check(5)").fetchall()
    except sqlite3.OperationalError:  # cannot read it (I/O, busy): not known to be damaged
        raise
    except sqlite3.DatabaseError as err:  # corrupt, or not a database at all
        raise StoreDamaged(store, str(err)) from err
    problems = [str(row[0]) for row in rows]
    if problems != ["ok"]:
        raise StoreDamaged(store, "; ".join(problems))
