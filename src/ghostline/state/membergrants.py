"""`Member`'s calls on grants (format 2, docs/PROTOCOL.md section 15): giving pad by
hand (`give`) and by policy (`auto_give`), and what a member knows of who holds what.
A mixin of `Member` (member.py): the facade's methods, in their own file by job; the
work is `granting.py`'s and `giving.py`'s."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import GiftTooLarge, JournalFullError, PadExhaustedError
from ..protocol.extents import Extents
from ..protocol.grants import GrantRange, initial_extents
from ..protocol.kitformat import FORMAT_1
from ..protocol.payload import GrantPayload
from . import giving, granting
from .entries import OutboxEntry
from .memberparts import MemberParts
from .usage import compute_usage


@dataclass(frozen=True)
class Gift:
    """A grant this member made: `grant` given, sealed as `entry` (in the outbox)."""

    grant: GrantRange
    entry: OutboxEntry


class MemberGrants(MemberParts):
    _seal_locked: Callable[..., list[OutboxEntry]]  # memberseal.py's

    def give(self, to: int, size: int) -> Gift:
        """Give `size` bytes of this member's unsealed pad to member `to` (docs/PROTOCOL.md
        section 15): out of its extents durably, into the kit's grant journal, then
        sealed as a grant message (in the outbox, like `seal`). Raises GiftTooLarge
        (nothing given) when no piece that large can be given, JournalFullError when
        the journal has no room, PadExhaustedError when no mask is left for the grant
        message, ValueError for a format-1 kit or a member who cannot receive."""
        h = self.header
        if self.header.format == FORMAT_1:
            raise ValueError("grants need a format-2 kit")
        if not 0 <= to < h.n or to == self.index or size < 1:
            raise ValueError(f"cannot give {size} bytes to member {to}")
        with self._lock, self.kit.seal_lock():
            if granting.journal_room(self.kit, self.store) < 1:
                raise JournalFullError(f"{self.kit.path}: the grant journal is full")
            with self.store.transaction():
                grant_id, grant = granting.take_gift(self.store, h, to, size, time.time())
                self._record_pending()
            granting.write_journal(self.kit, self.store)
            payload = GrantPayload(to, grant.start, grant.end, int(time.time())).encode()
            (entry,) = self._seal_locked([payload], grant_id=grant_id)
        return Gift(grant, entry)

    def giftable(self) -> int:
        """The most this member can give in one grant now (0 for a format-1 kit)."""
        step = self.header.length_step
        return 0 if step is None else granting.largest_gift(self.store.unsealed(), step)

    def auto_give(self) -> Gift | None:
        """Give part of this member's unused pad to a member running low, when the policy
        (`giving.plan_gift`) says this member should; None when it gives nothing."""
        if self.header.format == FORMAT_1:
            return None
        with self._lock:
            usage = compute_usage(self.kit, (self.store, self._history), scan_kit=False)
            plan = giving.plan_gift(
                usage.members,
                me=self.index,
                giftable=self.giftable(),
                outstanding=granting.outstanding(self.store, self.index),
                step=self.header.length_step or 1,
            )
            if plan is None:
                return None
            try:
                return self.give(plan.to, plan.size)
            except (GiftTooLarge, JournalFullError, PadExhaustedError):
                return None  # nothing given: the next message asks again

    def extents(self) -> tuple[Extents, ...]:
        """Every member's extents as this member knows them (format 1: the slices)."""
        if self.header.format == FORMAT_1:
            return initial_extents(self.header.n, self.header.slice_len)
        return self.store.extents(self.header.n)

    def failed_verifications(self) -> dict[int, int]:
        """Failed tag verifications per sender, with those not yet written."""
        with self._lock:
            counts = self.store.failed_counts()
            for sender, more in self._failed.items():
                counts[sender] = counts.get(sender, 0) + more
            return counts
