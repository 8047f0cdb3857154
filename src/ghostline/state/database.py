"""The state database file: its layout, opening and creating it, and transactions.

One SQLite file per member of one kit (WAL, synchronous=FULL), bound to that kit's
(pad_id, member index, n, slice length, key count) and refusing any other. Its tables
belong to two jobs, each with its own module: the safety tables, whose loss could
reuse pad or accept a replay (`store.py`), and the chat history with the saved-file
records (`history.py`). This module owns what they share: the one schema, the
connection, the lock and the transactions.

Every write is one explicit `BEGIN IMMEDIATE ... COMMIT`, so two processes of the same
member serialise on SQLite's write lock and re-read what they depend on inside the
transaction. Deleted rows are overwritten, not just unlinked (`secure_delete`), and
`checkpoint` truncates the write-ahead log, so deleted text leaves both files.

Layouts: no release has shipped, so there are no migrations. A database of an older
layout is refused with `OldStateLayout` (the CLI offers `pad recover` and its cost); a
newer one with a StateError. The protocol-v2 state (extents, grants, failed
verification counts) will be new safety tables here and in `store.py`, with the next
layout number. (A quarter of this module is the schema, hence its length.)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import OldStateLayout, StateError, StateOfAnotherKit, UnsupportedKitError
from ..fsutil import publish_new
from ..pad.kit import Kit
from ..protocol.kitformat import FORMAT_1, KitHeader

LAYOUT = 6
BUSY_TIMEOUT_MS = 30_000

# Layout 6. Safety tables (store.py): binding, sending, outbox, accepted, skipped,
# relay. History tables (history.py): history, history_keep, chat_seen, saved_file.
_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE binding (
    pad_id     BLOB    NOT NULL,
    self_index INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    slice_len  INTEGER NOT NULL,
    auth_keys  INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    origin     TEXT    NOT NULL          -- 'new' or 'recovered'
);
CREATE TABLE sending (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    next_counter INTEGER NOT NULL,
    next_offset  INTEGER NOT NULL
);
CREATE TABLE relay (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    cursor   INTEGER NOT NULL,
    store_id BLOB,                       -- NULL until a relay names its store
    seen     BLOB    NOT NULL DEFAULT X'', -- settled seqs above a hole, 8 bytes each
    epoch    INTEGER NOT NULL DEFAULT 0  -- one more each time the cursor starts from 0 again
);
CREATE TABLE outbox (
    counter   INTEGER PRIMARY KEY,
    offset    INTEGER NOT NULL,
    length    INTEGER NOT NULL,
    sealed    BLOB,                      -- NULL once the relay ACCEPTED it
    digest    BLOB    NOT NULL,          -- SHA-256 of the sealed bytes, kept for good
    seq       INTEGER,                   -- relay seq once ACCEPTED
    epoch     INTEGER,                   -- the relay epoch `seq` belongs to
    sealed_at REAL    NOT NULL,
    erased    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (counter) WHERE seq IS NULL;
CREATE INDEX outbox_unerased ON outbox (counter) WHERE erased = 0;
CREATE INDEX outbox_relay ON outbox (epoch, seq) WHERE seq IS NOT NULL;
CREATE TABLE accepted (
    sender     INTEGER NOT NULL,
    counter    INTEGER NOT NULL,
    offset     INTEGER,                  -- NULL for counters rebuilt by `pad recover`
    offset_end INTEGER,
    digest     BLOB,                     -- SHA-256 of the sealed message (NULL: recovered)
    seq        INTEGER,
    epoch      INTEGER,                  -- the relay epoch `seq` belongs to
    erased     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sender, counter)
) WITHOUT ROWID;
CREATE INDEX accepted_ranges ON accepted (sender, offset) WHERE offset IS NOT NULL;
CREATE INDEX accepted_unerased ON accepted (sender, counter) WHERE erased = 0;
CREATE INDEX accepted_relay ON accepted (epoch, seq) WHERE seq IS NOT NULL;
CREATE TABLE skipped (
    sender       INTEGER NOT NULL,
    offset       INTEGER NOT NULL,
    offset_end   INTEGER NOT NULL,
    counter      INTEGER NOT NULL,
    counter_end  INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    recorded_at  REAL    NOT NULL
);
CREATE TABLE history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sender      INTEGER NOT NULL,
    counter     INTEGER NOT NULL,
    seq         INTEGER,
    payload     BLOB    NOT NULL,
    recorded_at REAL    NOT NULL,
    state       TEXT    NOT NULL,        -- 'sealed' | 'stored' | 'received'
    relay_epoch INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sender, counter)
);
CREATE INDEX history_recorded ON history (recorded_at);
CREATE INDEX history_relay_order ON history
    (relay_epoch, COALESCE(seq, 9223372036854775807), id);
CREATE TABLE history_keep (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    days INTEGER CHECK (days IS NULL OR days >= 0)   -- NULL: for ever, 0: off
);
INSERT INTO history_keep VALUES (1, NULL);
CREATE TABLE chat_seen (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    history_id INTEGER NOT NULL          -- the newest history row when the chat last closed
);
CREATE TABLE saved_file (
    sender      INTEGER NOT NULL,
    transfer_id BLOB    NOT NULL,
    path        TEXT    NOT NULL,
    sha256      BLOB    NOT NULL,
    saved_at    REAL    NOT NULL,
    PRIMARY KEY (sender, transfer_id)
) WITHOUT ROWID
"""


@dataclass(frozen=True, slots=True)
class Binding:
    """Which kit a state database belongs to."""

    pad_id: bytes
    self_index: int
    n: int
    slice_len: int
    auth_keys: int


def binding_of(header: KitHeader) -> Binding:
    return Binding(header.pad_id, header.self_index, header.n, header.slice_len, header.auth_keys)


def default_state_path(header: KitHeader) -> Path:
    """Where GhostLine keeps the state database of this kit's owner."""
    return paths.state_dir() / f"{header.pad_id.hex()}-{header.self_index}.sqlite"


def require_format_1(kit: Kit) -> None:
    """Refuse a format-2 kit: the durable state suite 2 needs (extents, grants, failed
    verification counts) does not exist yet. The one place that says so."""
    if kit.format != FORMAT_1:
        raise UnsupportedKitError(os.fspath(kit.path), kit.format)


class Database:
    """One member's state database: one connection behind a lock (thread-safe)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, binding: Binding) -> None:
        self.path = path
        self.binding = binding
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self._writer: int | None = None  # the thread inside `transaction`

    # -- opening ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        binding: Binding,
        *,
        next_counter: int = 0,
        next_offset: int = 0,
        origin: str = "new",
    ) -> Database:
        """Make a new database at `path` (which must not exist), mode 0600.

        The database is built under a temporary name and linked into place whole, so
        a second process opening `path` at the same moment sees either nothing or a
        complete database, never an empty file. If another process wins the race,
        raises StateError; `Member.open` then opens the winner's database.
        """
        path = Path(path)
        if path.exists():
            raise StateError(f"{path}: a state database already exists there")
        building = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
        try:
            fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise StateError(f"{path}: cannot create the state database ({exc.strerror})") from None
        try:
            os.fchmod(fd, 0o600)  # whatever the umask; SQLite gives -wal and -shm this mode
        finally:
            os.close(fd)
        try:
            conn = _connect(building)
            try:
                with _raw_tx(conn):
                    for statement in _SCHEMA.split(";"):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_version VALUES (?)", (LAYOUT,))
                    conn.execute(
                        "INSERT INTO binding VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*_binding_row(binding), time.time(), origin),
                    )
                    conn.execute(
                        "INSERT INTO sending VALUES (1, ?, ?)", (next_counter, next_offset)
                    )
                    conn.execute("INSERT INTO relay (id, cursor) VALUES (1, 0)")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()  # the last connection to close removes -wal and -shm
            fd = os.open(building, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                publish_new(building, path)
            except FileExistsError:
                raise StateError(f"{path}: a state database already exists there") from None
        finally:
            building.unlink(missing_ok=True)
            for suffix in ("-wal", "-shm"):
                Path(f"{building}{suffix}").unlink(missing_ok=True)
        return cls(path, _connect(path), binding)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], binding: Binding, *, read_only: bool = False
    ) -> Database:
        """Open an existing database. Refuses one of another kit (StateOfAnotherKit) and
        one of an older layout (OldStateLayout, read-only or not)."""
        path = Path(path)
        if not path.is_file():
            raise StateError(f"{path}: no state database there")
        conn = _connect(path, read_only=read_only)
        try:
            found, version = _read_binding(conn, path)
            if found != binding:
                raise StateOfAnotherKit(
                    os.fspath(path),
                    found=(found.pad_id, found.self_index),
                    wanted=(binding.pad_id, binding.self_index),
                )
            if version < LAYOUT:
                raise OldStateLayout(os.fspath(path), version, LAYOUT)
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, binding)

    def close(self) -> None:
        """Checkpoint and close, so that the -wal and -shm files go away."""
        with self._lock:
            if self._conn is None:
                return
            conn, self._conn = self._conn, None
            # If another process holds the database, it checkpoints when it closes.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()

    @property
    def closed(self) -> bool:
        return self._conn is None

    # -- reading and writing ------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE ... COMMIT`: takes the write lock first, so what is read
        inside cannot change before the commit."""
        with self._lock:
            conn = self._live()
            if self._writer is not None:
                raise RuntimeError("nested transaction")
            self._writer = threading.get_ident()
            try:
                with _raw_tx(conn):
                    yield conn
            finally:
                self._writer = None

    def execute(self, sql: str, args: Iterable[Any] = ()) -> int:
        """One write inside this thread's `transaction`; returns the rows it changed."""
        if self._writer != threading.get_ident():
            raise RuntimeError("a write outside a transaction")
        return int(self._live().execute(sql, tuple(args)).rowcount)

    def execute_many(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        if self._writer != threading.get_ident():
            raise RuntimeError("a write outside a transaction")
        self._live().executemany(sql, [tuple(r) for r in rows])

    def one(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """The first row of a query (None if there is none)."""
        with self._lock:
            return self._live().execute(sql, tuple(args)).fetchone()

    def all(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            return self._live().execute(sql, tuple(args)).fetchall()

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database and truncate it to nothing, so
        that what was deleted is in neither file. False when another connection kept
        it from finishing (then the last one to close truncates it)."""
        busy = self.one("PRAGMA wal_checkpoint(TRUNCATE)")[0]
        return int(busy) == 0

    def origin(self) -> str:
        """'new', or 'recovered' for a database `pad recover` wrote."""
        return str(self.one("SELECT origin FROM binding")[0])

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"{self.path}: the state database is closed")
        return self._conn


# --- internals ----------------------------------------------------------------------


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    # Read-only opens the file read-write but sets query_only: a mode=ro connection
    # could create the -wal/-shm files yet never remove them, leaving litter behind
    # `pad info`. A file we may not write falls back to mode=ro.
    try:
        if read_only and not os.access(path, os.W_OK):
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Deleted rows (history, sealed bytes) are overwritten with zeros, not left in
        # free pages.
        conn.execute("PRAGMA secure_delete = ON")
        if not read_only:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"{path}: SQLite could not switch to WAL mode ({mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: not a usable state database ({exc})") from None
    return conn


@contextmanager
def _raw_tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StateError(f"the state database is locked or unwritable ({exc})") from None
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StateError(f"could not commit to the state database ({exc})") from None


def _read_binding(conn: sqlite3.Connection, path: Path) -> tuple[Binding, int]:
    """The kit a database belongs to and its layout. The binding table is the same in
    every layout; a layout newer than this GhostLine's is refused here."""
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = None if row is None else row[0]
        if not isinstance(version, int) or not 1 <= version <= LAYOUT:
            raise StateError(
                f"{path}: state layout {version} is not one this GhostLine knows (it "
                f"reads layout {LAYOUT}); a newer GhostLine may have written it"
            )
        row = conn.execute(
            "SELECT pad_id, self_index, n, slice_len, auth_keys FROM binding"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: not a GhostLine state database ({exc})") from None
    if row is None:
        raise StateError(f"{path}: the state database names no kit")
    return Binding(bytes(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4])), version


def _binding_row(b: Binding) -> tuple[bytes, int, int, int, int]:
    return (b.pad_id, b.self_index, b.n, b.slice_len, b.auth_keys)
