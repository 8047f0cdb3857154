"""The relay cursor as a member keeps it: what is committed (`store.py`), plus the seqs
of frames that were not authenticated, settled in memory until the next commit.

A rejected frame, a replay or an echo that does not match the outbox must change
nothing durable: a forged frame must never cause a write of its own. Its seq is still
settled (the relay will not send it again), so it waits here and is written with the
next commit that happens anyway (`write_waiting`). `relaycursor.RelayCursor` is the
pure value; this module decides when it is written.
"""

from __future__ import annotations

from ..protocol.relaycursor import RelayCursor
from .history import History
from .store import Store


class RelayCursorKeeper:
    """Not thread-safe by itself: `Member` calls it under its lock; the methods marked
    "inside a transaction" write."""

    def __init__(self, store: Store, history: History) -> None:
        self._store = store
        self._history = history
        self._waiting: list[tuple[bytes | None, int]] = []  # (store id, seq)
        self._lost: list[tuple[int, int]] = []

    def state(self) -> RelayCursor:
        """The cursor as committed, with the waiting seqs settled on top."""
        cursor = self._store.relay_cursor()
        waiting = [s for store, s in self._waiting if store in (None, cursor.store_id)]
        return cursor.settle(waiting)[0] if waiting else cursor

    def hold(self, store_id: bytes | None, seq: int) -> None:
        """Settle `seq` of relay store `store_id` in memory only, until the next commit."""
        self._waiting.append((store_id, seq))

    def settle(self, store_id: bytes | None, seqs: list[int]) -> None:
        """Inside a transaction: settle `seqs` of relay store `store_id`, with the waiting
        seqs. Seqs of another store than the cursor's are dropped: that store's cursor
        is not kept."""
        cursor = self._store.relay_cursor()
        waiting, self._waiting = self._waiting, []
        mine = [s for store, s in waiting if store in (None, cursor.store_id)]
        if store_id in (None, cursor.store_id):
            mine.extend(seqs)
        if mine:
            settled, lost = cursor.settle(mine)
            self._store.set_relay_cursor(settled)
            self._lost.extend(lost)

    def write_waiting(self) -> None:
        """Inside a transaction: write the waiting seqs, if any."""
        if self._waiting:
            self.settle(None, [])

    def enter(self, store_id: bytes) -> RelayCursor:
        """Inside a transaction: a relay named its store; from now on the cursor is that
        store's (protocol-v2 section 8). Returns the cursor as it was: another store's
        when its `store_id` differs (then the new one starts from 0, and history shows
        what comes now after everything before)."""
        before = self.state()
        after = before.for_store(store_id)
        if after != before:
            self._store.set_relay_cursor(after)
            if before.store_id is not None and before.store_id != store_id:
                self._history.next_relay_epoch()  # its seqs start again from 1
            self._waiting = []
        return before

    def give_up_to(self, seq: int, store_id: bytes | None) -> None:
        """Inside a transaction: step over every seq up to `seq` of store `store_id`."""
        cursor = self._store.relay_cursor()
        if store_id is None or cursor.store_id in (None, store_id):
            self._store.set_relay_cursor(cursor.give_up_to(seq))

    def take_lost(self) -> list[tuple[int, int]]:
        """Seqs given up since the last call because too many were settled above a hole
        (see relaycursor.MAX_SEEN): (first, last) of each."""
        lost, self._lost = self._lost, []
        return lost
