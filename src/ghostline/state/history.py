"""Chat history and saved-file records: what a member keeps to show, not to stay safe.

- `history`: own and received payloads, for display, in relay order (the relay
  store's epoch, then seq; own messages not yet stored last), kept as `history_keep`
  says: for ever (NULL), N days, or not at all (0). The parts of received files not yet
  saved are kept whatever the setting (`HeldParts`), so an interrupted transfer can
  still finish;
- `saved_file`: every received file written to the downloads folder, by (sender,
  transfer id), recorded only after the file is fsynced and linked into place, so a
  complete transfer with no row here was never saved (the chat app saves it on
  opening);
- `chat_seen`: the newest history row when the chat app last closed, where its "new
  since you left" starts.

Each row keeps the relay epoch it was recorded in (`store.py` counts it: one more each
time the relay cursor starts from 0 again), so a new store's messages (seqs from 1
again) come after the old store's.

Deleted history is overwritten, not just unlinked: the database runs with
`secure_delete`, and a delete is followed by a TRUNCATE checkpoint (`Member` calls it
after the commit), so the text leaves both the database file and its write-ahead log
(as far as the file system allows). Losing all of this costs nothing but the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.payload import PREFIX_LEN, TRANSFER_ID_LEN, Kind
from .database import Database

DAY = 86400.0
# Relay order: seqs of a new relay store start again from 1, so the store's epoch comes
# first; own messages not yet stored have no seq and come after every stored one.
_RELAY_ORDER = "relay_epoch, COALESCE(seq, 9223372036854775807), id"
_RELAY_ORDER_DESC = "relay_epoch DESC, COALESCE(seq, 9223372036854775807) DESC, id DESC"
_EPOCH = "(SELECT epoch FROM relay WHERE id = 1)"
_COLUMNS = "sender, counter, seq, payload, recorded_at, state, id"


@dataclass(frozen=True)
class HistoryEntry:
    sender: int
    sender_name: str
    counter: int
    seq: int | None
    payload: bytes
    recorded_at: float
    state: str  # "sealed" | "stored" (own) | "received"
    history_id: int | None = None  # grows in the order entries were recorded


@dataclass(frozen=True)
class SavedFiles:
    """Which received files were saved to the downloads folder (see `Member.saved_files`)."""

    records: dict[tuple[int, bytes], Path]  # (sender, transfer id) -> where it was saved


@dataclass(frozen=True)
class HistoryDeleted:
    """What deleting history did (`Member.set_history_keep`, `clear_history`)."""

    count: int  # history entries deleted
    left: int  # entries still kept (after a clear: parts of files not yet saved)
    checkpointed: bool  # False: another process had the database open (see Database.checkpoint)


@dataclass(frozen=True, slots=True)
class HeldParts:
    """Which history rows are parts of a file transfer, and where their transfer id is.

    A part received from another member is kept whatever the history setting says
    (off, expired, cleared) until `saved_file` records its transfer; then it goes like
    any other row.
    """

    kinds: bytes  # the first payload byte of each kind of file part
    id_start: int  # where the transfer id starts in the payload (0-based)
    id_len: int


# Parts of received files are kept until the file is saved, whatever the history setting.
HISTORY_HELD = HeldParts(bytes([Kind.FILE_HEADER, Kind.FILE_CHUNK]), PREFIX_LEN, TRANSFER_ID_LEN)


class History:
    """The history tables of one state database. Writes go inside the database's
    transaction (the caller's); reads take its lock."""

    def __init__(
        self, db: Database, names: Sequence[str], *, held: HeldParts = HISTORY_HELD
    ) -> None:
        self.db = db
        self.names = list(names)
        self.me = db.binding.self_index
        self.held = held

    # -- recording ----------------------------------------------------------------

    def record(
        self, sender: int, counter: int, seq: int | None, payload: bytes, now: float, state: str
    ) -> None:
        """Inside a transaction: a history row, unless history is off. With history off
        a part of a received file is still kept, until the file is saved."""
        held = sender != self.me and payload[:1] in (bytes([k]) for k in self.held.kinds)
        if self.keep() == 0 and not held:
            return
        self.db.execute(
            "INSERT INTO history (sender, counter, seq, payload, recorded_at, state, "
            f"relay_epoch) VALUES (?, ?, ?, ?, ?, ?, {_EPOCH})",
            (sender, counter, seq, payload, now, state),
        )

    def mark_stored(self, counter: int, seq: int) -> None:
        """Inside a transaction: own message `counter` is stored at the relay as `seq`."""
        self.db.execute(
            f"UPDATE history SET seq = ?, state = 'stored', relay_epoch = {_EPOCH} "
            "WHERE sender = ? AND counter = ?",
            (seq, self.me, counter),
        )

    # -- reading ------------------------------------------------------------------

    def page(self, limit: int | None = None, *, before: int | None = None) -> list[HistoryEntry]:
        """In relay order, oldest first. With `limit`, the newest `limit` entries; with
        `before` (a history id), only those that come before that entry: a page further
        back."""
        where, args = "", []
        if before is not None:
            where = f"WHERE ({_RELAY_ORDER}) < (SELECT {_RELAY_ORDER} FROM history WHERE id = ?)"
            args = [before]
        if limit is None:
            rows = self.db.all(
                f"SELECT {_COLUMNS} FROM history {where} ORDER BY {_RELAY_ORDER}", args
            )
        else:
            rows = self.db.all(
                f"SELECT {_COLUMNS} FROM history {where} ORDER BY {_RELAY_ORDER_DESC} LIMIT ?",
                [*args, max(0, limit)],
            )
            rows.reverse()
        return self._entries(rows)

    def of_kind(self, kind: int, head: int | None = None) -> list[HistoryEntry]:
        """Every entry whose payload's first byte is `kind`, oldest first. With `head`,
        each payload is cut to its first `head` bytes (SQLite cuts it, so a long
        payload's bytes are not copied out)."""
        payload = "payload" if head is None else f"substr(payload, 1, {max(0, int(head))})"
        rows = self.db.all(
            f"SELECT sender, counter, seq, {payload}, recorded_at, state, id "
            "FROM history WHERE substr(payload, 1, 1) = ? ORDER BY id",
            (bytes([kind]),),
        )
        return self._entries(rows)

    def of(self, keys: Iterable[tuple[int, int]]) -> list[HistoryEntry]:
        """The entries of these (sender, counter) pairs that exist, oldest first."""
        rows = []
        for sender, counter in keys:
            row = self.db.one(
                f"SELECT {_COLUMNS} FROM history WHERE sender = ? AND counter = ?",
                (sender, counter),
            )
            if row is not None:
                rows.append(row)
        rows.sort(key=lambda r: int(r[6]))
        return self._entries(rows)

    def recent_sizes(self, sender: int, kind: int, limit: int) -> list[int]:
        """Payload lengths of `sender`'s last `limit` entries of `kind`, newest first."""
        rows = self.db.all(
            "SELECT length(payload) FROM history WHERE sender = ? "
            "AND substr(payload, 1, 1) = ? ORDER BY id DESC LIMIT ?",
            (sender, bytes([kind]), limit),
        )
        return [int(r[0]) for r in rows]

    def count(self) -> int:
        return int(self.db.one("SELECT COUNT(*) FROM history")[0])

    def _entries(self, rows: Iterable[Any]) -> list[HistoryEntry]:
        """Rows selected as (sender, counter, seq, payload, recorded_at, state, id)."""
        return [
            HistoryEntry(
                int(r[0]),
                self.names[int(r[0])],
                int(r[1]),
                r[2],
                bytes(r[3]),
                float(r[4]),
                str(r[5]),
                int(r[6]),
            )
            for r in rows
        ]

    # -- commits of their own ------------------------------------------------------

    def record_saved(
        self, sender: int, transfer_id: bytes, path: str, sha256: bytes, now: float
    ) -> None:
        """One commit: `add_saved_file`, then what that lets go (its parts were held only
        until now, if history is off or they expired)."""
        with self.db.transaction():
            self.add_saved_file(sender, transfer_id, path, sha256, now)
            expired = self.expire(now, saved=True)
        if expired:
            self.db.checkpoint()

    def keep_for(self, days: int | None, now: float) -> HistoryDeleted:
        """One commit: keep history `days` days from now on, and delete what that
        setting no longer keeps."""
        with self.db.transaction():
            self.set_keep(days)
            count = self.expire(now, saved=True)
        return self._deleted(count)

    def clear(self) -> HistoryDeleted:
        """One commit: delete every entry but parts of received files not yet saved."""
        with self.db.transaction():
            count = self.delete()
        return self._deleted(count)

    def expire_now(self, now: float) -> None:
        """Delete what expired while nothing was committing (on opening)."""
        if self.keep() is None:
            return
        with self.db.transaction():
            expired = self.expire(now, saved=True)
        if expired:
            self.db.checkpoint()

    def mark_seen(self) -> None:
        """One commit: the chat app closes; everything in the history now was seen."""
        with self.db.transaction():
            self.set_chat_seen(self.head())

    def first_unseen(self) -> int | None:
        """The id of the first entry from another member recorded since the chat app
        last closed; None when there is none, or when it never closed."""
        seen = self.chat_seen()
        return None if seen is None else self.first_received_after(seen)

    def _deleted(self, count: int) -> HistoryDeleted:
        checkpointed = self.db.checkpoint()  # the deleted text leaves the log too
        return HistoryDeleted(count, self.count(), checkpointed)

    # -- keeping and deleting ------------------------------------------------------

    def keep(self) -> int | None:
        """Days history is kept: None for ever, 0 not at all."""
        row = self.db.one("SELECT days FROM history_keep WHERE id = 1")
        return None if row[0] is None else int(row[0])

    def set_keep(self, days: int | None) -> None:
        """Inside a transaction."""
        if days is not None and days < 0:
            raise ValueError("days of history cannot be negative")
        self.db.execute("UPDATE history_keep SET days = ? WHERE id = 1", (days,))

    def expire(self, now: float, *, saved: bool) -> int:
        """Inside a transaction: delete what the history setting no longer keeps.

        With history off nothing new is recorded but held file parts, and those go only
        once their file is saved: so with `saved=False` (a message came or went) there
        is nothing to look for, and the held parts are not scanned on every message."""
        days = self.keep()
        if days is None or (days == 0 and not saved):
            return 0
        return self.delete(before=now - days * DAY)

    def to_delete(self, days: int | None, now: float) -> int:
        """How many entries keeping history `days` days would delete at `now`."""
        if days is None:
            return 0
        cond, args = self._deletable(now - days * DAY)
        return int(self.db.one(f"SELECT COUNT(*) FROM history WHERE {cond}", args)[0])

    def delete(self, *, before: float | None = None) -> int:
        """Inside a transaction: delete every entry recorded before `before` (every
        entry when None) except held file parts. Returns how many went. Checkpoint the
        database after the commit so that the text leaves the write-ahead log too."""
        cond, args = self._deletable(before)
        return self.db.execute(f"DELETE FROM history WHERE {cond}", args)

    def _deletable(self, before: float | None) -> tuple[str, list[Any]]:
        held = self.held
        kinds = ", ".join("?" for _ in held.kinds)
        cond = (
            f"NOT (sender != ? AND substr(payload, 1, 1) IN ({kinds}) "
            "AND NOT EXISTS (SELECT 1 FROM saved_file AS s WHERE s.sender = history.sender "
            "AND s.transfer_id = substr(history.payload, ?, ?)))"
        )
        args: list[Any] = [self.me, *(bytes([k]) for k in held.kinds)]
        args += [held.id_start + 1, held.id_len]
        if before is not None:
            cond = f"recorded_at < ? AND {cond}"
            args.insert(0, before)
        return cond, args

    # -- the chat app's "new since you left" ----------------------------------------

    def head(self) -> int:
        """The id of the newest entry (0 when there is none)."""
        return int(self.db.one("SELECT MAX(id) FROM history")[0] or 0)

    def chat_seen(self) -> int | None:
        """The newest history id when the chat app last closed; None if it never did."""
        row = self.db.one("SELECT history_id FROM chat_seen WHERE id = 1")
        return None if row is None else int(row[0])

    def set_chat_seen(self, history_id: int) -> None:
        """Inside a transaction."""
        self.db.execute(
            "INSERT INTO chat_seen VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET history_id = ?",
            (history_id, history_id),
        )

    def first_received_after(self, history_id: int) -> int | None:
        """The id of the first entry from another member recorded after `history_id`.
        (Received in relay order, so the first recorded is also the first shown.)"""
        row = self.db.one(
            "SELECT MIN(id) FROM history WHERE id > ? AND sender != ?", (history_id, self.me)
        )
        return None if row[0] is None else int(row[0])

    # -- saved files --------------------------------------------------------------

    def add_saved_file(
        self, sender: int, transfer_id: bytes, path: str, sha256: bytes, now: float
    ) -> None:
        """Inside a transaction: record that a received file was saved. Call only once
        the file is durable under its final name. A second record of the same transfer
        keeps the first."""
        self.db.execute(
            "INSERT OR IGNORE INTO saved_file (sender, transfer_id, path, sha256, saved_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (sender, transfer_id, path, sha256, now),
        )

    def saved_files(self) -> SavedFiles:
        rows = self.db.all("SELECT sender, transfer_id, path FROM saved_file ORDER BY saved_at")
        return SavedFiles({(int(r[0]), bytes(r[1])): Path(r[2]) for r in rows})
