"""The relay cursor as a member keeps it, and what settles a relay seq.

Relay seqs are not authenticated, so a seq is settled only by a frame that shows the
relay holds there a message this member has (docs/PROTOCOL.md, "How the cursor moves"):

- a message that verifies and is recorded (`Member.receive` commits it with its seq);
- one of the member's own messages, byte for byte (the digest of what it sealed): the
  first time the relay is seen to hold it in this epoch (its echo while it waits in the
  outbox, or its ACCEPTED), and again at that same seq;
- a byte-for-byte copy of a message the member accepted, at the seq it came as in this
  epoch, or at any seq the first time after the cursor started from 0 again (a store
  change: the old seqs mean nothing there).

Anything else settles nothing, and is refused with the rule it broke: a forged echo, a
copy at another seq, a replayed counter with other bytes, any rejected frame. Its seq
stays a hole, asked for again on the next connection and reported if it never fills.

The relay epoch (`store.py`) goes one up each time the cursor starts from 0 again, so
a seq kept with a message says where the relay holds it only in its own epoch.

Writes: a frame that settles nothing writes nothing. A copy at the seq already known is
settled in memory only and written with the next commit that happens anyway
(`write_waiting`): a replayed copy must not cause a write of its own. Seeing a message
again in a new epoch writes once. `relaycursor.RelayCursor` is the pure value; this
module decides when it is written.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from ..errors import RejectedMessage
from ..protocol.envelope import Envelope
from ..protocol.relaycursor import Anchor, RelayCursor
from ..protocol.rules import Rule
from .history import History
from .store import Placed, Store

Commit = Callable[[], AbstractContextManager[object]]


class RelayCursorKeeper:
    """Not thread-safe by itself: `Member` calls it under its lock; the methods marked
    "inside a transaction" write, and `commit` opens one (with what waits for it)."""

    def __init__(self, store: Store, history: History, commit: Commit) -> None:
        self._store = store
        self._history = history
        self._commit = commit
        self._waiting: list[tuple[bytes | None, int]] = []  # (store id, seq)
        self._lost: list[tuple[int, int]] = []

    def state(self) -> RelayCursor:
        """The cursor as committed, with the waiting seqs settled on top."""
        cursor = self._store.relay_cursor()
        waiting = [s for store, s in self._waiting if store in (None, cursor.store_id)]
        return cursor.settle(waiting)[0] if waiting else cursor

    def anchor(self) -> Anchor | None:
        """The highest settled seq whose frame this member knows (`relaycursor.Anchor`)."""
        return self._store.anchor(self._store.relay_cursor().upto)

    def epoch_of(self, store_id: bytes | None) -> int | None:
        """The relay epoch now, if `store_id` names the cursor's store (None: the store
        the cursor belongs to); else None: a seq of that store says nothing here."""
        cursor = self._store.relay_cursor()
        if store_id is not None and cursor.store_id != store_id:
            return None
        return self._store.relay_epoch()

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
        when its `store_id` differs (then the new one starts from 0, in a new epoch)."""
        before = self.state()
        after = before.for_store(store_id)
        if after != before:
            other = before.store_id is not None and before.store_id != store_id
            self._store.set_relay_cursor(after, new_epoch=other)
            self._waiting = []
        return before

    def restart(self, store_id: bytes) -> RelayCursor:
        """Inside a transaction: the relay's store `store_id` went back (restored from a
        backup) or was replaced under the same id: read it from 0 again, in a new epoch,
        as for another store. Returns the cursor as it was."""
        before = self.state()
        self._store.set_relay_cursor(RelayCursor(store_id), new_epoch=True)
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

    # -- copies of what this member has -----------------------------------------------

    def own_copy(self, env: Envelope, seq: int, digest: bytes, store_id: bytes | None) -> None:
        """A frame at `seq` names one of this member's own counters: settle `seq` if it
        is that very message (see the module docstring), else RejectedMessage."""
        counter = env.counter
        row = self._store.outbox_row(counter)
        if row is None:
            raise RejectedMessage(
                Rule.OWN_MESSAGE,
                f"names this member as its sender, counter {counter}, which was sealed "
                "before `pad recover`: its bytes were not kept, so it cannot be told "
                "from a forgery",
            )
        if row.digest != digest:
            raise RejectedMessage(
                Rule.OWN_MESSAGE,
                f"names this member as its sender, counter {counter}, but is not the "
                "message it sealed: forged or altered",
            )
        epoch = self.epoch_of(store_id)
        if row.seq is None:  # still in the outbox: the relay has stored it
            with self._commit():
                if self._store.mark_accepted(counter, seq, epoch):
                    self._history.mark_stored(counter, seq)
                if epoch is not None:
                    self.settle(store_id, [seq])
            return
        placed = Placed(row.digest, row.seq, row.epoch)
        self._copy(placed, seq, store_id, epoch, Rule.OWN_MESSAGE, "this member's own message")
        if epoch is not None and row.epoch != epoch:
            with self._commit():
                self._store.place_own(counter, seq, epoch)
                self.settle(store_id, [seq])

    def accepted_copy(self, env: Envelope, seq: int, digest: bytes, store_id: bytes | None) -> None:
        """A frame at `seq` repeats (sender, counter) of an accepted message: settle
        `seq` if it is that very message (see the module docstring), else
        RejectedMessage."""
        placed = self._store.accepted_copy(env.sender, env.counter)
        who = f"message {env.counter} from member {env.sender}"
        if placed is None or placed.digest is None:
            raise RejectedMessage(
                Rule.REPLAYED_COUNTER,
                f"{who} was already accepted, before `pad recover`: its bytes were not "
                "kept, so this copy cannot be told from a forgery",
            )
        if placed.digest != digest:
            raise RejectedMessage(
                Rule.REPLAYED_COUNTER,
                f"{who} was already accepted, and this is not that message: forged or altered",
            )
        epoch = self.epoch_of(store_id)
        self._copy(placed, seq, store_id, epoch, Rule.REPLAYED_COUNTER, who)
        if epoch is not None and placed.epoch != epoch:
            with self._commit():
                self._store.place_accepted(env.sender, env.counter, seq, epoch)
                self.settle(store_id, [seq])

    def _copy(
        self,
        placed: Placed,
        seq: int,
        store_id: bytes | None,
        epoch: int | None,
        rule: str,
        subject: str,
    ) -> None:
        """A byte-for-byte copy, at `seq`, of a message the relay holds at `placed`:
        settled in memory where the relay is known to hold it, refused at any other seq
        of the same epoch. A new epoch's first copy is the caller's to write."""
        if epoch is None or placed.epoch != epoch:
            return
        if placed.seq != seq:
            raise RejectedMessage(
                rule,
                f"a copy of {subject}, which the relay holds as seq {placed.seq}, "
                f"replayed at seq {seq}",
            )
        self._hold(store_id, seq)

    def _hold(self, store_id: bytes | None, seq: int) -> None:
        """Settle `seq` in memory only, until the next commit (nothing if it is already)."""
        if not self.state().is_settled(seq):
            self._waiting.append((store_id, seq))
