"""The format-2 safety tables, and the failed-verification counts (both formats).

`Store` (store.py) is built on `GrantTables`: one object, one database, the tables split
over two files by job. See store.py's docstring for what each table holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import StateError
from ..protocol.extents import Extents
from ..protocol.grants import GrantRange
from .database import Database


@dataclass(frozen=True, slots=True)
class GrantRow:
    """A grant this member made (`giver` is the owner) or received in a message."""

    id: int
    giver: int
    counter: int | None  # the grant message's; None: own grant never sealed
    grant: GrantRange
    rule: str | None  # None: it moved its range; else the check it failed
    journal: str  # JOURNAL_*


# Where a grant stands with the kit's grant journal.
JOURNAL_WAITING = "waiting"  # to be appended (after the commit that made or accepted it)
JOURNAL_WRITTEN = "written"
JOURNAL_FULL = "full"  # the journal had no room left (docs/PROTOCOL.md section 15)
JOURNAL_NONE = "none"  # a refused grant: it moved nothing, so nothing to journal


class GrantTables:
    """Extents, the owner's unsealed bytes, grants and failed verifications."""

    db: Database

    # -- format 2: extents (also the seal2.ReceiverView protocol) ------------------

    def extents(self, n: int) -> tuple[Extents, ...]:
        """Every member's extents as this member knows them, by index."""
        found: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for member, start, end in self.db.all("SELECT member, start, end FROM extents"):
            if not 0 <= member < n:
                raise StateError(f"{self.db.path}: the extents name member {member}")
            found[member].append((int(start), int(end)))
        return tuple(self._extents(ranges) for ranges in found)

    def member_extents(self, member: int) -> Extents:
        rows = self.db.all("SELECT start, end FROM extents WHERE member = ?", (member,))
        return self._extents([(int(a), int(b)) for a, b in rows])

    def set_member_extents(self, member: int, extents: Extents) -> None:
        """Inside a transaction: replace `member`'s extents."""
        self.db.execute("DELETE FROM extents WHERE member = ?", (member,))
        self.db.execute_many(
            "INSERT INTO extents VALUES (?, ?, ?)", [(member, a, b) for a, b in extents]
        )

    def holds(self, sender: int, start: int, end: int) -> bool:
        # Stored ranges are merged (Extents), so one range holds all of [start, end) or
        # none does: the last one starting at or before `start`. One index seek.
        if not 0 <= start < end:
            return False
        row = self.db.one(
            "SELECT end FROM extents WHERE member = ? AND start <= ? ORDER BY start DESC LIMIT 1",
            (sender, start),
        )
        return row is not None and int(row[0]) >= end

    def overlaps_accepted(self, start: int, end: int) -> bool:
        # Format 2: accepted ranges of all senders are disjoint (overlaps are refused),
        # so only the last one starting before `end` can reach past `start`.
        row = self.db.one(
            "SELECT offset_end FROM accepted WHERE offset IS NOT NULL AND offset < ? "
            "ORDER BY offset DESC LIMIT 1",
            (end,),
        )
        return row is not None and int(row[0]) > start

    def unsealed(self) -> Extents:
        """The owner's extents it has never sealed with. Inside `transaction()`, locked."""
        rows = self.db.all("SELECT start, end FROM unsealed")
        return self._extents([(int(a), int(b)) for a, b in rows])

    def set_unsealed(self, free: Extents) -> None:
        """Inside a transaction."""
        self.db.execute("DELETE FROM unsealed")
        self.db.execute_many("INSERT INTO unsealed VALUES (?, ?)", free.ranges)

    def _extents(self, ranges: list[tuple[int, int]]) -> Extents:
        try:
            return Extents(ranges)
        except ValueError as exc:
            raise StateError(f"{self.db.path}: the extents are damaged ({exc})") from None

    def accepted_all(self, sender: int, keys: int) -> bool:
        """Whether every counter 0..keys-1 of `sender` is accepted (its masks are used
        up). Counters are distinct and below `keys`, so all are there only if the highest
        is keys - 1 (one index seek) and there are `keys` of them (counted only then)."""
        top = self.db.one("SELECT MAX(counter) FROM accepted WHERE sender = ?", (sender,))[0]
        if top is None or int(top) != keys - 1:
            return False
        count = self.db.one("SELECT COUNT(*) FROM accepted WHERE sender = ?", (sender,))[0]
        return int(count) == keys

    # -- format 2: grants -----------------------------------------------------------

    def add_grant(
        self,
        giver: int,
        counter: int | None,
        grant: GrantRange,
        now: float,
        *,
        rule: str | None = None,
        journal: str = JOURNAL_WAITING,
    ) -> int:
        """Inside a transaction: record a grant; returns its id (ids grow in the order
        grants were recorded, which is the order they go into the journal)."""
        self.db.execute(
            "INSERT INTO grants (giver, counter, receiver, start, end, rule, journal, "
            "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (giver, counter, grant.to, grant.start, grant.end, rule, journal, now),
        )
        return int(self.db.one("SELECT last_insert_rowid()")[0])

    def set_grant_counter(self, grant_id: int, counter: int) -> None:
        """Inside a transaction: own grant `grant_id` was sealed as message `counter`."""
        self.db.execute("UPDATE grants SET counter = ? WHERE id = ?", (counter, grant_id))

    def grants(self, *, giver: int | None = None) -> list[GrantRow]:
        """Every grant recorded (by `giver` only, if given), in recording order."""
        where, args = ("WHERE giver = ?", (giver,)) if giver is not None else ("", ())
        rows = self.db.all(
            "SELECT id, giver, counter, receiver, start, end, rule, journal FROM grants "
            f"{where} ORDER BY id",
            args,
        )
        return [_grant_row(r) for r in rows]

    def grants_journal(self) -> tuple[int, list[GrantRow]]:
        """(grants written to the kit's journal, the grants waiting to be), waiting in
        recording order: the journal holds the written ones, then perhaps some of the
        waiting ones in this order (a crash can come between appending and marking)."""
        written = self.db.one("SELECT COUNT(*) FROM grants WHERE journal = ?", (JOURNAL_WRITTEN,))
        rows = self.db.all(
            "SELECT id, giver, counter, receiver, start, end, rule, journal FROM grants "
            "WHERE journal = ? ORDER BY id",
            (JOURNAL_WAITING,),
        )
        return int(written[0]), [_grant_row(r) for r in rows]

    def mark_journal(self, grant_ids: Iterable[int], state: str) -> None:
        """Inside a transaction."""
        self.db.execute_many(
            "UPDATE grants SET journal = ? WHERE id = ?", [(state, g) for g in grant_ids]
        )

    def grant_rules(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """The check each of these grant messages (giver, counter) failed, for those that
        failed one."""
        found: dict[tuple[int, int], str] = {}
        for giver, counter in keys:
            row = self.db.one(
                "SELECT rule FROM grants WHERE giver = ? AND counter = ? AND rule IS NOT NULL",
                (giver, counter),
            )
            if row is not None:
                found[(giver, counter)] = str(row[0])
        return found

    def used_in(self, sender: int, start: int, end: int) -> bool:
        """Whether a message accepted from `sender` lies inside [start, end)."""
        row = self.db.one(
            "SELECT 1 FROM accepted WHERE sender = ? AND offset IS NOT NULL AND offset >= ? "
            "AND offset_end <= ? LIMIT 1",
            (sender, start, end),
        )
        return row is not None

    # -- failed verifications ---------------------------------------------------------

    def add_failed(self, counts: dict[int, int]) -> None:
        """Inside a transaction: add failed tag verifications per sender."""
        self.db.execute_many(
            "INSERT INTO failed VALUES (?, ?) "
            "ON CONFLICT (sender) DO UPDATE SET count = count + excluded.count",
            list(counts.items()),
        )

    def failed_counts(self) -> dict[int, int]:
        return {int(s): int(c) for s, c in self.db.all("SELECT sender, count FROM failed")}


def _grant_row(r: Any) -> GrantRow:
    return GrantRow(
        id=int(r[0]),
        giver=int(r[1]),
        counter=int(r[2]) if r[2] is not None else None,
        grant=GrantRange(int(r[3]), int(r[4]), int(r[5])),
        rule=str(r[6]) if r[6] is not None else None,
        journal=str(r[7]),
    )
