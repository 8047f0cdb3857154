"""Local durable state of one member of one kit (SQLite, WAL, synchronous=FULL).

What a member must never forget, because forgetting it reuses pad or accepts replays:

- `sending`: the next counter and the next offset of its own slice;
- `outbox`: every message it sealed (counter, offset, length), with the sealed bytes
  until the relay ACCEPTED it (then its seq, and the bytes are dropped);
- `accepted`: every (sender, counter) it accepted, with the pad range
  [offset, offset_end) and the relay seq; counters recovered by `pad recover` have no
  range;
- `history`: own and received payloads, for display, kept as `history_keep` says
  (for ever, N days, or off) except the parts of received files not yet saved (see
  `HeldParts`); `chat_seen` is where the chat app's "new since you left" starts;
- `relay`: the relay cursor (`relaycursor.RelayCursor`): the relay store it belongs to
  (`store_id`, NULL for a cursor kept before relays named their store), the seq up to
  which every seq is settled (`cursor`), and the settled seqs above a hole (`seen`,
  8 bytes each);
- `saved_file`: every received file written to the downloads folder, by (sender,
  transfer id), recorded only after the file is fsynced and linked into place, so a
  complete transfer with no row here was never saved (the chat app saves it on
  opening). `saves_tracked` says from which history row on that holds: rows up to
  its `history_id` were recorded by schema 1, which kept no such table;
- the erasure record: `outbox.erased` and `accepted.erased` say which messages'
  key and pad bytes are already zeroed in the kit, so the sweep on start-up knows what
  remains; `skipped` holds ranges `pad recover` stepped over (and erased).

A database is bound to one (pad_id, member index) and refuses any other kit. Every
write is one explicit `BEGIN IMMEDIATE ... COMMIT`, so two processes of the same member
serialise on SQLite's write lock and re-read `sending` inside the transaction.

Schema versions: 1 had no `saved_file`/`saves_tracked`, 2 no `relay.store_id`/`seen`,
3 no `history_keep`, `chat_seen` or history indexes; `Store.open` migrates an older
database in one transaction (a read-only open reads it as it is).

Deleted history is overwritten, not just unlinked: every connection runs with
`secure_delete`, and a delete is followed by a TRUNCATE checkpoint, so the text leaves
both the database file and its write-ahead log (as far as the file system allows).

This module knows nothing about kits or sealing: `member.py` drives it.
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

from ..errors import StateError
from ..fsutil import fsync_dir
from ..protocol.relaycursor import RelayCursor

SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 30_000

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
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    cursor INTEGER NOT NULL
);
CREATE TABLE outbox (
    counter   INTEGER PRIMARY KEY,
    offset    INTEGER NOT NULL,
    length    INTEGER NOT NULL,
    sealed    BLOB,                      -- NULL once the relay ACCEPTED it
    seq       INTEGER,                   -- relay seq once ACCEPTED
    sealed_at REAL    NOT NULL,
    erased    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (counter) WHERE seq IS NULL;
CREATE INDEX outbox_unerased ON outbox (counter) WHERE erased = 0;
CREATE TABLE accepted (
    sender     INTEGER NOT NULL,
    counter    INTEGER NOT NULL,
    offset     INTEGER,                  -- NULL for counters rebuilt by `pad recover`
    offset_end INTEGER,
    seq        INTEGER,
    erased     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sender, counter)
) WITHOUT ROWID;
CREATE INDEX accepted_ranges ON accepted (sender, offset) WHERE offset IS NOT NULL;
CREATE INDEX accepted_unerased ON accepted (sender, counter) WHERE erased = 0;
CREATE TABLE history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sender      INTEGER NOT NULL,
    counter     INTEGER NOT NULL,
    seq         INTEGER,
    payload     BLOB    NOT NULL,
    recorded_at REAL    NOT NULL,
    state       TEXT    NOT NULL,        -- 'sealed' | 'stored' | 'received'
    UNIQUE (sender, counter)
);
CREATE TABLE skipped (
    sender       INTEGER NOT NULL,
    offset       INTEGER NOT NULL,
    offset_end   INTEGER NOT NULL,
    counter      INTEGER NOT NULL,
    counter_end  INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    recorded_at  REAL    NOT NULL
);
"""

# Added by schema 2 (and by the migration from 1).
_SCHEMA_2 = """
CREATE TABLE saved_file (
    sender      INTEGER NOT NULL,
    transfer_id BLOB    NOT NULL,
    path        TEXT    NOT NULL,
    sha256      BLOB    NOT NULL,
    saved_at    REAL    NOT NULL,
    PRIMARY KEY (sender, transfer_id)
) WITHOUT ROWID;
CREATE TABLE saves_tracked (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    history_id INTEGER NOT NULL          -- history rows up to this id predate saved_file
);
"""

# Added by schema 3 (and by the migration from 1 or 2): the relay store the cursor
# belongs to (protocol-v2 section 8), and the seqs settled above a hole.
_SCHEMA_3 = """
ALTER TABLE relay ADD COLUMN store_id BLOB;
ALTER TABLE relay ADD COLUMN seen BLOB NOT NULL DEFAULT X''
"""

# Added by schema 4 (and by the migration from 1, 2 or 3).
_SCHEMA_4 = """
CREATE TABLE history_keep (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    days INTEGER CHECK (days IS NULL OR days >= 0)   -- NULL: for ever, 0: off
);
INSERT INTO history_keep VALUES (1, NULL);
CREATE TABLE chat_seen (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    history_id INTEGER NOT NULL          -- the newest history row when the chat last closed
);
CREATE TABLE relay_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL               -- one more each time the relay store changes
);
INSERT INTO relay_epoch VALUES (1, 0);
ALTER TABLE history ADD COLUMN relay_epoch INTEGER NOT NULL DEFAULT 0;
CREATE INDEX history_recorded ON history (recorded_at);
CREATE INDEX history_relay_order ON history
    (relay_epoch, COALESCE(seq, 9223372036854775807), id)
"""
# Relay order: seqs of a new relay store start again from 1, so the store's epoch comes
# first; own messages not yet stored have no seq and come after every stored one.
_RELAY_ORDER = "relay_epoch, COALESCE(seq, 9223372036854775807), id"
_EPOCH = "(SELECT epoch FROM relay_epoch WHERE id = 1)"


@dataclass(frozen=True, slots=True)
class Binding:
    """Which kit a state database belongs to."""

    pad_id: bytes
    self_index: int
    n: int
    slice_len: int
    auth_keys: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    counter: int
    offset: int
    length: int
    sealed: bytes | None
    seq: int | None
    erased: bool


@dataclass(frozen=True, slots=True)
class AcceptedRow:
    sender: int
    counter: int
    offset: int | None
    length: int | None
    seq: int | None
    erased: bool


@dataclass(frozen=True, slots=True)
class HistoryRow:
    sender: int
    counter: int
    seq: int | None
    payload: bytes
    recorded_at: float
    state: str
    id: int = 0  # the row's id: increases in the order rows were recorded


@dataclass(frozen=True, slots=True)
class HeldParts:
    """Which history rows are parts of a file transfer, and where their transfer id is.

    A part received from another member is kept whatever the history setting says
    (off, expired, cleared) until `saved_file` records its transfer, so that an
    interrupted transfer can still finish; then it goes like any other row. Parts
    recorded before saves were tracked (`saves_tracked`) count as saved.
    """

    kinds: bytes  # the first payload byte of each kind of file part
    id_start: int  # where the transfer id starts in the payload (0-based)
    id_len: int


@dataclass(frozen=True, slots=True)
class SavedFileRow:
    """A received file written to the downloads folder (see `saved_file`)."""

    sender: int
    transfer_id: bytes
    path: str
    sha256: bytes
    saved_at: float


@dataclass(frozen=True, slots=True)
class SenderTotals:
    """What this member accepted from one sender (for usage figures)."""

    messages: int  # accepted with a known range
    counters: int  # accepted counters, including recovered ones
    bytes: int
    highest_counter: int  # -1 when none
    highest_end: int  # 0 when none


@dataclass(frozen=True, slots=True)
class SkippedRange:
    sender: int
    offset: int
    offset_end: int
    counter: int
    counter_end: int
    reason: str


class Store:
    """One member's state database. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, binding: Binding) -> None:
        self.path = path
        self._conn = conn
        self.binding = binding
        self._lock = threading.RLock()
        self._in_tx = False

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
    ) -> Store:
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
                    _execute_script(conn, ";".join((_SCHEMA, _SCHEMA_2, _SCHEMA_3, _SCHEMA_4)))
                    conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                    conn.execute("INSERT INTO saves_tracked VALUES (1, 0)")
                    conn.execute(
                        "INSERT INTO binding VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            binding.pad_id,
                            binding.self_index,
                            binding.n,
                            binding.slice_len,
                            binding.auth_keys,
                            time.time(),
                            origin,
                        ),
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
                os.link(building, path)
            except FileExistsError:
                raise StateError(f"{path}: a state database already exists there") from None
        finally:
            building.unlink(missing_ok=True)
            for suffix in ("-wal", "-shm"):
                Path(f"{building}{suffix}").unlink(missing_ok=True)
        fsync_dir(path.parent)
        conn = _connect(path)
        return cls(path, conn, binding)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], binding: Binding, *, read_only: bool = False
    ) -> Store:
        """Open an existing database; refuse one that belongs to another kit. An older
        schema is migrated (unless `read_only`: then it is read as it is)."""
        path = Path(path)
        if not path.is_file():
            raise StateError(f"{path}: no state database there")
        conn = _connect(path, read_only=read_only)
        try:
            found, version = _read_binding(conn, path)
            if found != binding:
                raise StateError(
                    f"{path}: this state database belongs to another kit "
                    f"(pad {found.pad_id.hex()}, member {found.self_index}), "
                    f"not pad {binding.pad_id.hex()}, member {binding.self_index}",
                    hint="Pass the state file that belongs to this kit, or leave --state out.",
                )
            if version < SCHEMA_VERSION and not read_only:
                _migrate(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, binding)

    def close(self) -> None:
        """Checkpoint and close, so that the -wal and -shm files go away."""
        with self._lock:
            if self._conn is None:
                return
            conn, self._conn = self._conn, None  # type: ignore[assignment]
            # If another process holds the database, it checkpoints when it closes.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()

    @property
    def closed(self) -> bool:
        return self._conn is None

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE ... COMMIT`: takes the write lock first, so what is read
        inside cannot change before the commit."""
        with self._lock:
            if self._conn is None:
                raise StateError(f"{self.path}: the state database is closed")
            if self._in_tx:
                raise RuntimeError("nested transaction")
            self._in_tx = True
            try:
                with _raw_tx(self._conn) as conn:
                    yield conn
            finally:
                self._in_tx = False

    @property
    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"{self.path}: the state database is closed")
        return self._conn

    # -- sending ------------------------------------------------------------------

    def next_position(self) -> tuple[int, int]:
        """(next counter, next offset). Inside `transaction()` this is the locked value."""
        with self._lock:
            row = self._c.execute(
                "SELECT next_counter, next_offset FROM sending WHERE id = 1"
            ).fetchone()
        return int(row[0]), int(row[1])

    def set_next_position(self, counter: int, offset: int) -> None:
        self._c.execute(
            "UPDATE sending SET next_counter = ?, next_offset = ? WHERE id = 1", (counter, offset)
        )

    def add_outbox(self, counter: int, offset: int, length: int, sealed: bytes, now: float) -> None:
        self._c.execute(
            "INSERT INTO outbox (counter, offset, length, sealed, seq, sealed_at, erased) "
            "VALUES (?, ?, ?, ?, NULL, ?, 0)",
            (counter, offset, length, sealed, now),
        )

    def outbox_row(self, counter: int) -> OutboxRow | None:
        with self._lock:
            row = self._c.execute(
                "SELECT counter, offset, length, sealed, seq, erased FROM outbox WHERE counter = ?",
                (counter,),
            ).fetchone()
        return _outbox_row(row) if row else None

    def pending(self) -> list[OutboxRow]:
        with self._lock:
            rows = self._c.execute(
                "SELECT counter, offset, length, sealed, seq, erased FROM outbox "
                "WHERE seq IS NULL ORDER BY counter"
            ).fetchall()
        return [_outbox_row(r) for r in rows]

    def mark_accepted(self, counter: int, seq: int) -> bool:
        """Inside a transaction: record the relay seq of an own message and drop its
        sealed bytes. Returns whether a pending message had that counter."""
        c = self._c
        cur = c.execute(
            "UPDATE outbox SET seq = ?, sealed = NULL WHERE counter = ? AND seq IS NULL",
            (seq, counter),
        )
        if cur.rowcount:
            c.execute(
                f"UPDATE history SET seq = ?, state = 'stored', relay_epoch = {_EPOCH} "
                "WHERE sender = ? AND counter = ?",
                (seq, self.binding.self_index, counter),
            )
        return cur.rowcount > 0

    def unerased_outbox(self) -> list[OutboxRow]:
        with self._lock:
            rows = self._c.execute(
                "SELECT counter, offset, length, sealed, seq, erased FROM outbox "
                "WHERE erased = 0 ORDER BY counter"
            ).fetchall()
        return [_outbox_row(r) for r in rows]

    def sent_totals(self) -> tuple[int, int]:
        """(messages sealed, bytes sealed)."""
        with self._lock:
            row = self._c.execute("SELECT COUNT(*), TOTAL(length) FROM outbox").fetchone()
        return int(row[0]), int(row[1])

    # -- receiving (also the seal.AcceptedLog protocol) ---------------------------

    def has_counter(self, sender: int, counter: int) -> bool:
        with self._lock:
            row = self._c.execute(
                "SELECT 1 FROM accepted WHERE sender = ? AND counter = ?", (sender, counter)
            ).fetchone()
        return row is not None

    def overlaps(self, sender: int, start: int, end: int) -> bool:
        # Accepted ranges of one sender never overlap (overlaps are rejected), so
        # sorted by start they are sorted by end too: only the last range starting
        # before `end` can reach past `start`. One index seek.
        with self._lock:
            row = self._c.execute(
                "SELECT offset_end FROM accepted WHERE sender = ? AND offset IS NOT NULL "
                "AND offset < ? ORDER BY offset DESC LIMIT 1",
                (sender, end),
            ).fetchone()
        return row is not None and int(row[0]) > start

    def add_accepted(
        self, sender: int, counter: int, offset: int | None, length: int | None, seq: int | None
    ) -> None:
        end = None if offset is None or length is None else offset + length
        self._c.execute(
            "INSERT INTO accepted (sender, counter, offset, offset_end, seq, erased) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (sender, counter, offset, end, seq, 0 if offset is not None else 1),
        )

    def unerased_accepted(self) -> list[AcceptedRow]:
        with self._lock:
            rows = self._c.execute(
                "SELECT sender, counter, offset, offset_end, seq, erased FROM accepted "
                "WHERE erased = 0 ORDER BY sender, counter"
            ).fetchall()
        return [_accepted_row(r) for r in rows]

    def accepted_totals(self) -> dict[int, SenderTotals]:
        with self._lock:
            rows = self._c.execute(
                "SELECT sender, COUNT(offset), COUNT(*), TOTAL(offset_end - offset), "
                "MAX(counter), MAX(offset_end) FROM accepted GROUP BY sender"
            ).fetchall()
        return {
            int(r[0]): SenderTotals(
                messages=int(r[1]),
                counters=int(r[2]),
                bytes=int(r[3]),
                highest_counter=int(r[4]) if r[4] is not None else -1,
                highest_end=int(r[5]) if r[5] is not None else 0,
            )
            for r in rows
        }

    # -- erasure record -----------------------------------------------------------

    def record_erased(
        self, own_counters: Iterable[int], received: Iterable[tuple[int, int]]
    ) -> None:
        """Mark messages whose key and pad bytes are zeroed in the kit. Call inside a
        transaction (it is piggy-backed on the next commit; losing it only makes the
        sweep erase the same bytes again)."""
        c = self._c
        c.executemany(
            "UPDATE outbox SET erased = 1 WHERE counter = ?", [(k,) for k in own_counters]
        )
        c.executemany(
            "UPDATE accepted SET erased = 1 WHERE sender = ? AND counter = ?", list(received)
        )

    def erased_key_count(self, n: int) -> int:
        """One-time keys this database knows are erased: n-1 per own message, one per
        accepted message (a fast stand-in for scanning the kit)."""
        with self._lock:
            own = self._c.execute("SELECT COUNT(*) FROM outbox WHERE erased = 1").fetchone()
            got = self._c.execute("SELECT COUNT(*) FROM accepted WHERE erased = 1").fetchone()
            skip = self._c.execute("SELECT TOTAL(counter_end - counter) FROM skipped").fetchone()
        return (int(own[0]) + int(skip[0])) * (n - 1) + int(got[0])

    def erased_pad_bytes(self) -> int:
        """Pad bytes this database knows are erased in the kit."""
        with self._lock:
            own = self._c.execute("SELECT TOTAL(length) FROM outbox WHERE erased = 1").fetchone()
            got = self._c.execute(
                "SELECT TOTAL(offset_end - offset) FROM accepted "
                "WHERE erased = 1 AND offset IS NOT NULL"
            ).fetchone()
            skip = self._c.execute("SELECT TOTAL(offset_end - offset) FROM skipped").fetchone()
        return int(own[0]) + int(got[0]) + int(skip[0])

    def add_skipped(self, skipped: SkippedRange, now: float) -> None:
        self._c.execute(
            "INSERT INTO skipped VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                skipped.sender,
                skipped.offset,
                skipped.offset_end,
                skipped.counter,
                skipped.counter_end,
                skipped.reason,
                now,
            ),
        )

    def skipped(self) -> list[SkippedRange]:
        with self._lock:
            rows = self._c.execute(
                "SELECT sender, offset, offset_end, counter, counter_end, reason FROM skipped"
            ).fetchall()
        return [SkippedRange(*r) for r in rows]

    def origin(self) -> str:
        with self._lock:
            return str(self._c.execute("SELECT origin FROM binding").fetchone()[0])

    # -- history and cursor -------------------------------------------------------

    def add_history(
        self, sender: int, counter: int, seq: int | None, payload: bytes, now: float, state: str
    ) -> None:
        self._c.execute(
            "INSERT INTO history (sender, counter, seq, payload, recorded_at, state, "
            f"relay_epoch) VALUES (?, ?, ?, ?, ?, ?, {_EPOCH})",
            (sender, counter, seq, payload, now, state),
        )

    def next_relay_epoch(self) -> None:
        """Inside a transaction: the relay store changed; what comes now is shown after
        everything before, whatever its seqs."""
        self._c.execute("UPDATE relay_epoch SET epoch = epoch + 1 WHERE id = 1")

    def history(self, limit: int | None = None, *, before: int | None = None) -> list[HistoryRow]:
        """In relay order (the relay store's epoch, then seq, own messages not yet stored
        last, then as recorded), oldest first. With `limit`, the newest `limit` entries;
        with `before` (a row's id), only those that come before that row: a page further
        back."""
        where, args = "", []
        if before is not None:
            where = f"WHERE ({_RELAY_ORDER}) < (SELECT {_RELAY_ORDER} FROM history WHERE id = ?)"
            args = [before]
        desc = "relay_epoch DESC, COALESCE(seq, 9223372036854775807) DESC, id DESC"
        with self._lock:
            if limit is None:
                rows = self._c.execute(
                    "SELECT sender, counter, seq, payload, recorded_at, state, id FROM history "
                    f"{where} ORDER BY {_RELAY_ORDER}",
                    args,
                ).fetchall()
            else:
                rows = self._c.execute(
                    "SELECT sender, counter, seq, payload, recorded_at, state, id FROM history "
                    f"{where} ORDER BY {desc} LIMIT ?",
                    [*args, max(0, limit)],
                ).fetchall()
                rows.reverse()
        return [_history_row(r) for r in rows]

    def history_starting_with(self, first: int, head: int | None = None) -> list[HistoryRow]:
        """Rows whose payload's first byte is `first`, oldest first. With `head`, each
        payload is cut to its first `head` bytes (SQLite cuts it, so a long payload's
        bytes are not copied out). Read-only."""
        payload = "payload" if head is None else f"substr(payload, 1, {max(0, int(head))})"
        with self._lock:
            rows = self._c.execute(
                f"SELECT sender, counter, seq, {payload}, recorded_at, state, id "
                "FROM history WHERE substr(payload, 1, 1) = ? ORDER BY id",
                (bytes([first]),),
            ).fetchall()
        return [_history_row(r) for r in rows]

    def recent_sizes(self, sender: int, first: int, limit: int) -> list[int]:
        """Payload lengths of `sender`'s last `limit` rows whose payload's first byte is
        `first`, newest first. Read-only."""
        with self._lock:
            rows = self._c.execute(
                "SELECT length(payload) FROM history WHERE sender = ? "
                "AND substr(payload, 1, 1) = ? ORDER BY id DESC LIMIT ?",
                (sender, bytes([first]), limit),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def history_of(self, keys: Iterable[tuple[int, int]]) -> list[HistoryRow]:
        """The rows of these (sender, counter) pairs that exist, oldest first. Read-only."""
        found: list[HistoryRow] = []
        with self._lock:
            for sender, counter in keys:
                r = self._c.execute(
                    "SELECT sender, counter, seq, payload, recorded_at, state, id FROM history "
                    "WHERE sender = ? AND counter = ?",
                    (sender, counter),
                ).fetchone()
                if r is not None:
                    found.append(_history_row(r))
        found.sort(key=lambda row: row.id)
        return found

    # -- keeping and deleting history ------------------------------------------------

    def history_keep(self) -> int | None:
        """Days history is kept: None for ever, 0 not at all."""
        with self._lock:
            row = self._c.execute("SELECT days FROM history_keep WHERE id = 1").fetchone()
        return None if row[0] is None else int(row[0])

    def set_history_keep(self, days: int | None) -> None:
        """Inside a transaction."""
        if days is not None and days < 0:
            raise ValueError("days of history cannot be negative")
        self._c.execute("UPDATE history_keep SET days = ? WHERE id = 1", (days,))

    def count_history(self, held: HeldParts, *, before: float | None = None) -> int:
        """How many rows `delete_history` with these arguments would delete."""
        cond, args = self._deletable(held, before)
        with self._lock:
            return int(
                self._c.execute(f"SELECT COUNT(*) FROM history WHERE {cond}", args).fetchone()[0]
            )

    def delete_history(self, held: HeldParts, *, before: float | None = None) -> int:
        """Inside a transaction: delete every row recorded before `before` (every row when
        None) except held file parts. Returns how many went. Call `checkpoint` after the
        commit so that the deleted text leaves the write-ahead log too."""
        cond, args = self._deletable(held, before)
        return int(self._c.execute(f"DELETE FROM history WHERE {cond}", args).rowcount)

    def _deletable(self, held: HeldParts, before: float | None) -> tuple[str, list[Any]]:
        kinds = ", ".join("?" for _ in held.kinds)
        cond = (
            f"NOT (sender != ? AND substr(payload, 1, 1) IN ({kinds}) "
            "AND id > (SELECT history_id FROM saves_tracked WHERE id = 1) "
            "AND NOT EXISTS (SELECT 1 FROM saved_file AS s WHERE s.sender = history.sender "
            "AND s.transfer_id = substr(history.payload, ?, ?)))"
        )
        args: list[Any] = [self.binding.self_index, *(bytes([k]) for k in held.kinds)]
        args += [held.id_start + 1, held.id_len]
        if before is not None:
            cond = f"recorded_at < ? AND {cond}"
            args.insert(0, before)
        return cond, args

    def history_rows(self) -> int:
        with self._lock:
            return int(self._c.execute("SELECT COUNT(*) FROM history").fetchone()[0])

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database and truncate it to nothing, so
        that what was deleted is in neither file. False when another connection kept
        it from finishing (then the last one to close truncates it)."""
        with self._lock:
            busy = self._c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return int(busy) == 0

    # -- the chat app's "new since you left" ------------------------------------------

    def history_head(self) -> int:
        """The id of the newest history row (0 when there is none)."""
        with self._lock:
            row = self._c.execute("SELECT MAX(id) FROM history").fetchone()
        return int(row[0] or 0)

    def chat_seen(self) -> int | None:
        """The newest history row when the chat app last closed; None if it never did."""
        with self._lock:
            row = self._c.execute("SELECT history_id FROM chat_seen WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def set_chat_seen(self, history_id: int) -> None:
        """Inside a transaction."""
        self._c.execute(
            "INSERT INTO chat_seen VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET history_id = ?",
            (history_id, history_id),
        )

    def first_received_after(self, history_id: int) -> int | None:
        """The id of the first row from another member recorded after `history_id`.
        (Received in relay order, so the first recorded is also the first shown.)"""
        with self._lock:
            row = self._c.execute(
                "SELECT MIN(id) FROM history WHERE id > ? AND sender != ?",
                (history_id, self.binding.self_index),
            ).fetchone()
        return None if row[0] is None else int(row[0])

    # -- saved files --------------------------------------------------------------

    def add_saved_file(
        self, sender: int, transfer_id: bytes, path: str, sha256: bytes, now: float
    ) -> None:
        """Inside a transaction: record that a received file was saved. Call only once
        the file is durable under its final name. A second record of the same transfer
        keeps the first."""
        self._c.execute(
            "INSERT OR IGNORE INTO saved_file (sender, transfer_id, path, sha256, saved_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (sender, transfer_id, path, sha256, now),
        )

    def saved_files(self) -> list[SavedFileRow]:
        with self._lock:
            rows = self._c.execute(
                "SELECT sender, transfer_id, path, sha256, saved_at FROM saved_file "
                "ORDER BY saved_at"
            ).fetchall()
        return [
            SavedFileRow(int(r[0]), bytes(r[1]), str(r[2]), bytes(r[3]), float(r[4])) for r in rows
        ]

    def saves_tracked_after(self) -> int:
        """History rows with an id up to this were recorded before saved files were
        (schema 1): whether their files were saved is not known. 0 when every row is
        tracked."""
        with self._lock:
            row = self._c.execute("SELECT history_id FROM saves_tracked WHERE id = 1").fetchone()
        return int(row[0])

    def relay_cursor(self) -> RelayCursor:
        """The relay cursor as committed (a database older than schema 3, read-only,
        has no store id and nothing seen above its cursor)."""
        with self._lock:
            c = self._c
            try:
                row = c.execute("SELECT cursor, store_id, seen FROM relay WHERE id = 1").fetchone()
            except sqlite3.OperationalError:  # schema 1 or 2, opened read-only
                row = (*c.execute("SELECT cursor FROM relay WHERE id = 1").fetchone(), None, b"")
        try:
            return RelayCursor.from_row(
                bytes(row[1]) if row[1] is not None else None, int(row[0]), bytes(row[2])
            )
        except ValueError:
            raise StateError(f"{self.path}: the relay cursor is damaged") from None

    def set_relay_cursor(self, cursor: RelayCursor) -> None:
        """Inside a transaction: record the relay cursor."""
        self._c.execute(
            "UPDATE relay SET cursor = ?, store_id = ?, seen = ? WHERE id = 1",
            (cursor.upto, cursor.store_id, cursor.seen_blob()),
        )

    def dump(self) -> list[str]:
        """Every row of every table, as SQL text (tests compare states with it)."""
        with self._lock:
            return list(self._c.iterdump())


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


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated statements one by one (inside the caller's transaction;
    `executescript` would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None or not 1 <= int(row[0]) <= SCHEMA_VERSION:
        raise StateError(
            f"{path}: state schema version {row and row[0]} is not supported "
            f"(want {SCHEMA_VERSION} or older)"
        )
    return int(row[0])


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring an older database up to SCHEMA_VERSION in one transaction. The version is
    read again under the write lock: another process may have migrated it meanwhile.

    1 -> 2: add `saved_file` and `saves_tracked`. Files in the history so far were
    saved (or not) when schema 1 kept no record; they are marked untracked rather than
    all saved again as duplicates.
    2 -> 3: add `relay.store_id` (NULL: the old cursor goes with the first store a
    relay names) and `relay.seen` (empty).
    3 -> 4: add `history_keep` (kept for ever, as before), `chat_seen` (none yet) and
    the history indexes.
    """
    try:
        with _raw_tx(conn):
            version = _schema_version(conn, path)
            if version < 2:
                _execute_script(conn, _SCHEMA_2)
                conn.execute(
                    "INSERT INTO saves_tracked SELECT 1, COALESCE(MAX(id), 0) FROM history"
                )
            relay_columns = {row[1] for row in conn.execute("PRAGMA table_info(relay)")}
            if version < 3 and "store_id" not in relay_columns:
                _execute_script(conn, _SCHEMA_3)
            if version < 4:
                _execute_script(conn, _SCHEMA_4)
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: could not upgrade the state database ({exc})") from None


def _read_binding(conn: sqlite3.Connection, path: Path) -> tuple[Binding, int]:
    try:
        version = _schema_version(conn, path)
        row = conn.execute(
            "SELECT pad_id, self_index, n, slice_len, auth_keys FROM binding"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: not a GhostLine state database ({exc})") from None
    if row is None:
        raise StateError(f"{path}: the state database names no kit")
    binding = Binding(bytes(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))
    return binding, version


def _history_row(r: Any) -> HistoryRow:
    """A row selected as (sender, counter, seq, payload, recorded_at, state, id)."""
    return HistoryRow(int(r[0]), int(r[1]), r[2], bytes(r[3]), float(r[4]), str(r[5]), id=int(r[6]))


def _outbox_row(r: Any) -> OutboxRow:
    return OutboxRow(
        counter=int(r[0]),
        offset=int(r[1]),
        length=int(r[2]),
        sealed=bytes(r[3]) if r[3] is not None else None,
        seq=int(r[4]) if r[4] is not None else None,
        erased=bool(r[5]),
    )


def _accepted_row(r: Any) -> AcceptedRow:
    offset = int(r[2]) if r[2] is not None else None
    end = int(r[3]) if r[3] is not None else None
    return AcceptedRow(
        sender=int(r[0]),
        counter=int(r[1]),
        offset=offset,
        length=None if offset is None or end is None else end - offset,
        seq=int(r[4]) if r[4] is not None else None,
        erased=bool(r[5]),
    )
