"""The safety tables: what a member must never forget, because forgetting it reuses pad
or accepts a replay.

- `sending`: the next counter and the next offset of its own slice;
- `outbox`: every message it sealed (counter, offset, length), with the sealed bytes
  until the relay ACCEPTED it (then its seq, and the bytes are dropped) and their
  digest for good;
- `accepted`: every (sender, counter) it accepted, with the pad range
  [offset, offset_end), the digest of the sealed message and the relay seq; counters
  recovered by `pad recover` have no range and no digest;
- the erasure record: `outbox.erased` and `accepted.erased` say which messages' key
  and pad bytes are already zeroed in the kit, so the sweep on start-up knows what
  remains; `skipped` holds ranges `pad recover` stepped over (and erased);
- `relay`: the relay cursor (`relaycursor.RelayCursor`): the relay store it belongs to
  (`store_id`), the seq up to which every seq is settled (`cursor`), and the settled
  seqs above a hole (`seen`, 8 bytes each); and the relay `epoch`, one more each time
  the cursor starts from 0 again (another store, or this one went back). A message's
  `seq` in `outbox` or `accepted` says where the relay holds it only in the epoch kept
  beside it (`Placed`);
- format 2 (docs/PROTOCOL.md sections 14-15): `extents`, every member's extents as
  this member knows them; `unsealed`, the owner's extents it has never sealed with
  (where it seals next, and all it may give); `grants`, every grant made or received,
  whether it moved its range (`rule` NULL) or which check it failed, and whether it
  is in the kit's grant journal yet (`journal`) (these live in `grantstore.py`);
- `failed`: tag verifications that failed, per sender (written with the next commit).

A digest (`relaycursor.frame_digest`) is what tells a genuine copy of a message from a
forgery naming the same sender and counter, and what the relay cursor's anchor
(`anchor`) is checked by.

This module knows nothing about kits or sealing: `member.py` drives it. The tables live
in the state database (`database.py`), beside the history (`history.py`). (It is over
400 lines because this comment lists every table in one place and the outbox's paged
reads sit beside its other queries; the format-2 tables' queries are `grantstore.py`'s.)
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StateError
from ..protocol.relaycursor import Anchor, RelayCursor, frame_digest
from .database import Binding, Database
from .grantstore import GrantTables


@dataclass(frozen=True, slots=True)
class OutboxRow:
    counter: int
    offset: int
    length: int
    sealed: bytes | None
    seq: int | None
    erased: bool
    digest: bytes
    epoch: int | None  # the relay epoch `seq` belongs to


@dataclass(frozen=True, slots=True)
class Placed:
    """A message this member has: the digest of its sealed bytes (None: rebuilt by
    `pad recover`, bytes unknown) and where the relay holds it (`seq`, meaningful only
    when `epoch` is the relay epoch now)."""

    digest: bytes | None
    seq: int | None
    epoch: int | None


@dataclass(frozen=True, slots=True)
class AcceptedRow:
    sender: int
    counter: int
    offset: int | None
    length: int | None
    seq: int | None
    erased: bool


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


class Store(GrantTables):
    """The safety tables of one state database. Thread-safe (the database's lock)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], binding: Binding, *, read_only: bool = False
    ) -> Store:
        return cls(Database.open(path, binding, read_only=read_only))

    @classmethod
    def create(cls, path: str | os.PathLike[str], binding: Binding, **start: Any) -> Store:
        """A new database (see `Database.create` for `next_counter`, `next_offset`,
        `origin`)."""
        return cls(Database.create(path, binding, **start))

    @property
    def path(self) -> Path:
        return self.db.path

    @property
    def binding(self) -> Binding:
        return self.db.binding

    @property
    def closed(self) -> bool:
        return self.db.closed

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One commit of the whole database (safety tables and history alike)."""
        with self.db.transaction() as conn:
            yield conn

    # -- sending ------------------------------------------------------------------

    def next_position(self) -> tuple[int, int]:
        """(next counter, next offset). Inside `transaction()` this is the locked value."""
        row = self.db.one("SELECT next_counter, next_offset FROM sending WHERE id = 1")
        return int(row[0]), int(row[1])

    def set_next_position(self, counter: int, offset: int) -> None:
        self.db.execute(
            "UPDATE sending SET next_counter = ?, next_offset = ? WHERE id = 1", (counter, offset)
        )

    def add_outbox(self, counter: int, offset: int, length: int, sealed: bytes, now: float) -> None:
        self.db.execute(
            "INSERT INTO outbox (counter, offset, length, sealed, digest, seq, sealed_at, "
            "erased) VALUES (?, ?, ?, ?, ?, NULL, ?, 0)",
            (counter, offset, length, sealed, frame_digest(sealed), now),
        )

    def outbox_row(self, counter: int) -> OutboxRow | None:
        row = self.db.one(f"SELECT {_OUTBOX} FROM outbox WHERE counter = ?", (counter,))
        return _outbox_row(row) if row else None

    def pending_counters(self) -> list[int]:
        rows = self.db.all("SELECT counter FROM outbox WHERE seq IS NULL ORDER BY counter")
        return [int(r[0]) for r in rows]

    def pending_span(self) -> tuple[int, int]:
        """How many messages are pending, and the highest counter among them (-1: none)."""
        count, last = self.db.one("SELECT COUNT(*), MAX(counter) FROM outbox WHERE seq IS NULL")
        return int(count), -1 if last is None else int(last)

    def pending_page(self, after: int, upto: int, most_bytes: int, most: int) -> list[OutboxRow]:
        """The pending rows with `after < counter <= upto`, by counter: at most `most`
        of them, of at most `most_bytes` sealed bytes together (but one, however long).
        The sizes are read first, so no more sealed bytes than that are ever loaded."""
        sizes = self.db.all(
            "SELECT counter, IFNULL(length(sealed), 0) FROM outbox"
            " WHERE seq IS NULL AND counter > ? AND counter <= ? ORDER BY counter LIMIT ?",
            (after, upto, most),
        )
        last, total = None, 0
        for counter, size in sizes:
            total += size
            if last is not None and total > most_bytes:
                break
            last = counter
        if last is None:
            return []
        rows = self.db.all(
            f"SELECT {_OUTBOX} FROM outbox"
            " WHERE seq IS NULL AND counter > ? AND counter <= ? ORDER BY counter",
            (after, last),
        )
        return [_outbox_row(r) for r in rows]

    def mark_accepted(self, counter: int, seq: int, epoch: int | None) -> bool:
        """Inside a transaction: record the relay seq of an own message (in relay epoch
        `epoch`; None: not the epoch of this member's cursor) and drop its sealed bytes.
        Returns whether a pending message had that counter."""
        changed = self.db.execute(
            "UPDATE outbox SET seq = ?, epoch = ?, sealed = NULL WHERE counter = ? AND seq IS NULL",
            (seq, epoch, counter),
        )
        return changed > 0

    def place_own(self, counter: int, seq: int, epoch: int) -> None:
        """Inside a transaction: the relay of epoch `epoch` holds own message `counter`
        (already accepted) at `seq`."""
        self.db.execute(
            "UPDATE outbox SET seq = ?, epoch = ? WHERE counter = ? AND seq IS NOT NULL",
            (seq, epoch, counter),
        )

    def unerased_outbox(self) -> list[OutboxRow]:
        rows = self.db.all(f"SELECT {_OUTBOX} FROM outbox WHERE erased = 0 ORDER BY counter")
        return [_outbox_row(r) for r in rows]

    def sent_totals(self) -> tuple[int, int]:
        """(messages sealed, bytes sealed)."""
        row = self.db.one("SELECT COUNT(*), TOTAL(length) FROM outbox")
        return int(row[0]), int(row[1])

    # -- receiving (also the seal.AcceptedLog protocol) ---------------------------

    def has_counter(self, sender: int, counter: int) -> bool:
        row = self.db.one(
            "SELECT 1 FROM accepted WHERE sender = ? AND counter = ?", (sender, counter)
        )
        return row is not None

    def overlaps(self, sender: int, start: int, end: int) -> bool:
        # Accepted ranges of one sender never overlap (overlaps are rejected), so
        # sorted by start they are sorted by end too: only the last range starting
        # before `end` can reach past `start`. One index seek.
        row = self.db.one(
            "SELECT offset_end FROM accepted WHERE sender = ? AND offset IS NOT NULL "
            "AND offset < ? ORDER BY offset DESC LIMIT 1",
            (sender, end),
        )
        return row is not None and int(row[0]) > start

    def add_accepted(
        self,
        sender: int,
        counter: int,
        offset: int | None,
        length: int | None,
        seq: int | None,
        *,
        digest: bytes | None = None,
        epoch: int | None = None,
    ) -> None:
        """Inside a transaction: (sender, counter) is accepted. `seq` counts only with
        `epoch` (None: not known in the relay epoch now)."""
        end = None if offset is None or length is None else offset + length
        self.db.execute(
            "INSERT INTO accepted (sender, counter, offset, offset_end, digest, seq, epoch, "
            "erased) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sender, counter, offset, end, digest, seq, epoch, 0 if offset is not None else 1),
        )

    def accepted_copy(self, sender: int, counter: int) -> Placed | None:
        """The accepted message (sender, counter): its digest and where the relay holds it."""
        row = self.db.one(
            "SELECT digest, seq, epoch FROM accepted WHERE sender = ? AND counter = ?",
            (sender, counter),
        )
        return None if row is None else _placed(row)

    def place_accepted(self, sender: int, counter: int, seq: int, epoch: int) -> None:
        """Inside a transaction: the relay of epoch `epoch` holds accepted message
        (sender, counter) at `seq`."""
        self.db.execute(
            "UPDATE accepted SET seq = ?, epoch = ? WHERE sender = ? AND counter = ?",
            (seq, epoch, sender, counter),
        )

    def unerased_accepted(self) -> list[AcceptedRow]:
        rows = self.db.all(
            "SELECT sender, counter, offset, offset_end, seq, erased FROM accepted "
            "WHERE erased = 0 ORDER BY sender, counter"
        )
        return [_accepted_row(r) for r in rows]

    def accepted_totals(self) -> dict[int, SenderTotals]:
        rows = self.db.all(
            "SELECT sender, COUNT(offset), COUNT(*), TOTAL(offset_end - offset), "
            "MAX(counter), MAX(offset_end) FROM accepted GROUP BY sender"
        )
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
        self.db.execute_many(
            "UPDATE outbox SET erased = 1 WHERE counter = ?", [(k,) for k in own_counters]
        )
        self.db.execute_many(
            "UPDATE accepted SET erased = 1 WHERE sender = ? AND counter = ?", received
        )

    def erased_key_count(self, n: int) -> int:
        """One-time keys this database knows are erased: n-1 per own message, one per
        accepted message (a fast stand-in for scanning the kit)."""
        own = self.db.one("SELECT COUNT(*) FROM outbox WHERE erased = 1")
        got = self.db.one("SELECT COUNT(*) FROM accepted WHERE erased = 1")
        skip = self.db.one("SELECT TOTAL(counter_end - counter) FROM skipped")
        return (int(own[0]) + int(skip[0])) * (n - 1) + int(got[0])

    def erased_pad_bytes(self) -> int:
        """Pad bytes this database knows are erased in the kit."""
        own = self.db.one("SELECT TOTAL(length) FROM outbox WHERE erased = 1")
        got = self.db.one(
            "SELECT TOTAL(offset_end - offset) FROM accepted "
            "WHERE erased = 1 AND offset IS NOT NULL"
        )
        skip = self.db.one("SELECT TOTAL(offset_end - offset) FROM skipped")
        return int(own[0]) + int(got[0]) + int(skip[0])

    def add_skipped(self, skipped: SkippedRange, now: float) -> None:
        s = skipped
        self.db.execute(
            "INSERT INTO skipped VALUES (?, ?, ?, ?, ?, ?, ?)",
            (s.sender, s.offset, s.offset_end, s.counter, s.counter_end, s.reason, now),
        )

    def skipped(self) -> list[SkippedRange]:
        rows = self.db.all(
            "SELECT sender, offset, offset_end, counter, counter_end, reason FROM skipped"
        )
        return [SkippedRange(*r) for r in rows]

    def origin(self) -> str:
        return self.db.origin()

    # -- the relay cursor ---------------------------------------------------------

    def relay_cursor(self) -> RelayCursor:
        """The relay cursor as committed."""
        row = self.db.one("SELECT cursor, store_id, seen FROM relay WHERE id = 1")
        try:
            return RelayCursor.from_row(
                bytes(row[1]) if row[1] is not None else None, int(row[0]), bytes(row[2])
            )
        except ValueError:
            raise StateError(f"{self.path}: the relay cursor is damaged") from None

    def relay_epoch(self) -> int:
        return int(self.db.one("SELECT epoch FROM relay WHERE id = 1")[0])

    def set_relay_cursor(self, cursor: RelayCursor, *, new_epoch: bool = False) -> None:
        """Inside a transaction: record the relay cursor. `new_epoch`: it starts from 0
        again, and no seq recorded so far says where the relay holds a message."""
        self.db.execute(
            "UPDATE relay SET cursor = ?, store_id = ?, seen = ?, epoch = epoch + ? WHERE id = 1",
            (cursor.upto, cursor.store_id, cursor.seen_blob(), int(new_epoch)),
        )

    def anchor(self, upto: int) -> Anchor | None:
        """The highest seq at or below `upto`, in the relay epoch now, where the relay
        holds a message whose digest this member knows (own or accepted)."""
        found: list[tuple[int, bytes]] = []
        for table in ("accepted", "outbox"):
            row = self.db.one(
                f"SELECT seq, digest FROM {table} WHERE epoch = (SELECT epoch FROM relay) "
                "AND seq IS NOT NULL AND seq <= ? AND digest IS NOT NULL "
                "ORDER BY seq DESC LIMIT 1",
                (upto,),
            )
            if row is not None:
                found.append((int(row[0]), bytes(row[1])))
        if not found:
            return None
        seq, digest = max(found)
        try:
            return Anchor(seq, digest)
        except ValueError:
            raise StateError(f"{self.path}: a message digest is damaged") from None


_OUTBOX = "counter, offset, length, sealed, seq, erased, digest, epoch"


def _outbox_row(r: Any) -> OutboxRow:
    return OutboxRow(
        counter=int(r[0]),
        offset=int(r[1]),
        length=int(r[2]),
        sealed=bytes(r[3]) if r[3] is not None else None,
        seq=int(r[4]) if r[4] is not None else None,
        erased=bool(r[5]),
        digest=bytes(r[6]),
        epoch=int(r[7]) if r[7] is not None else None,
    )


def _placed(r: Any) -> Placed:
    return Placed(
        digest=bytes(r[0]) if r[0] is not None else None,
        seq=int(r[1]) if r[1] is not None else None,
        epoch=int(r[2]) if r[2] is not None else None,
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
