"""Receiving: every DELIVER is opened and recorded before its event is emitted, and the
relay cursor moves only as protocol/relaycursor.py allows (docs/PROTOCOL.md section 8).

- Resumes after `Member.relay_state()`, the cursor of the relay's store: a WELCOME naming
  another store restarts from seq 0 (`Resume`), and (sender, counter) refuses what was
  already accepted, quietly (`AlreadyReceived`).
- Every DELIVER goes through `Member.receive` in the durable worker (`durable.py`), one
  after the other in the order they came, which records the message and the cursor
  before the event is emitted. Seqs already settled are opened all the same: a
  reordered frame must not be dropped as "already processed".
- The cursor moves only over a contiguous run of seqs; a hole is asked for again on a
  fresh connection (`Resume`), and reported (`MessagesMissing`) when it never fills.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PayloadError, RejectedMessage
from ..protocol import payload as payload_mod
from ..protocol.frames import SEQ_LIMIT, Welcome
from ..protocol.relaycursor import GapWatch, Lost, Refetch, RelayCursor, SeqGuard
from ..protocol.rules import Rule
from .durable import Durable
from .events import (
    AlreadyReceived,
    Event,
    MessageReceived,
    MessageRejected,
    StoreChanged,
    missing,
)

if TYPE_CHECKING:
    from ..state.member import Member, Received

# resume_after for a send-only client: past any seq (and within SQLite's signed 64 bits).
NOTHING_STORED = SEQ_LIMIT - 1


class Resume(Exception):
    """End this connection and open another to the same relay (not a failover)."""


@dataclass
class Receiving:
    """One connection's view of the relay's seqs, from its WELCOME on."""

    relay: str
    store_id: bytes | None  # the store the seqs belong to (None: a send-only client)
    guard: SeqGuard  # refuses seqs the relay cannot have assigned yet
    gaps: GapWatch | None  # the watch over holes (None: a send-only client)


Outcome = tuple["Received | RejectedMessage | None", list[tuple[int, int]]]


class Inbox:
    """`receive=False` makes a send-only inbox: it asks the relay for nothing stored and
    opens nothing. After `receive_limit` opened messages, later DELIVERs are left
    unprocessed (cursor unmoved), so that `listen --count N` never consumes a message it
    will not show."""

    def __init__(
        self,
        member: Member,
        durable: Durable,
        emit: Callable[[Event], None],
        *,
        receive: bool,
        receive_limit: int | None,
        gap_wait: float,
    ) -> None:
        self.member = member
        self.durable = durable
        self._emit = emit
        self.receive = receive
        self.receive_limit = receive_limit
        # How long a hole in the relay seqs may stay open before it is asked for again
        # on a fresh connection, and then before it is reported as lost.
        self.gap_wait = gap_wait
        self.opened = 0  # messages opened and emitted

    @property
    def full(self) -> bool:
        return self.receive_limit is not None and self.opened >= self.receive_limit

    async def resume_after(self) -> int:
        """The seq to ask the relay to resume after (HELLO's resume_after)."""
        if not self.receive:
            return NOTHING_STORED
        return (await self.durable.run(self.member.relay_state)).upto

    async def enter(self, relay: str, welcome: Welcome, asked: int) -> Receiving:
        """WELCOME came: take the cursor of the store it names (protocol-v2 section 8).
        A store other than the cursor's restarts from 0: if we asked for more, the relay
        skips seqs 1..asked, so connect again (`Resume`)."""
        if not self.receive:
            return Receiving(relay, None, SeqGuard(welcome.head), None)
        before, now = await self.durable.run(self._enter_store, welcome.store_id)
        if before.store_id not in (None, welcome.store_id):
            self._emit(StoreChanged(relay, before.upto))
            if asked > 0:
                raise Resume("the relay's store changed: catching up from its first message")
        guard = SeqGuard(max(welcome.head, asked))
        return Receiving(relay, welcome.store_id, guard, GapWatch(self.gap_wait, welcome.head, now))

    def _enter_store(self, store_id: bytes) -> tuple[RelayCursor, RelayCursor]:
        before = self.member.enter_relay_store(store_id)
        return before, self.member.relay_state()

    async def on_deliver(self, rx: Receiving, seq: int, sealed: bytes) -> None:
        """Open and record the message the relay delivered as `seq`, then say what came."""
        if not self.receive or self.full:
            return
        opening = functools.partial(self._open, seq, sealed, rx.store_id)
        await self.durable.run(opening, then=functools.partial(self._opened, rx.relay, seq))

    def _open(self, seq: int, sealed: bytes, store_id: bytes | None) -> Outcome:
        # receive() commits the message and the cursor before we report anything; a
        # rejected frame writes nothing.
        try:
            received = self.member.receive(seq, sealed, store_id=store_id)
        except RejectedMessage as err:
            return err, self.member.take_lost()
        return received, self.member.take_lost()

    def _opened(self, relay: str, seq: int, outcome: Outcome) -> None:
        received, lost = outcome
        if isinstance(received, RejectedMessage):
            if received.rule == Rule.REPLAYED_COUNTER:
                self._emit(AlreadyReceived(seq))
            else:
                self._emit(MessageRejected(seq, received.rule, received.message))
        for event in missing(lost, relay):
            self._emit(event)
        if received is None or isinstance(received, RejectedMessage):
            return  # None: our own message, echoed on resume
        try:
            obj: payload_mod.Payload | None = payload_mod.decode(received.payload)
        except PayloadError:
            obj = None
        self.opened += 1
        self._emit(MessageReceived(received, obj))

    async def gap_loop(self, rx: Receiving) -> None:
        """Ask again for seqs that stay missing, then report and step over them."""
        assert rx.gaps is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.01, self.gap_wait / 4))
            if self.full:
                continue  # what is left unprocessed on purpose is no hole
            verdict = rx.gaps.check(await self.durable.run(self.member.relay_state), loop.time())
            if isinstance(verdict, Refetch):
                raise Resume(f"relay seqs {verdict.first}-{verdict.last} are missing: asking again")
            if isinstance(verdict, Lost):
                give_up = functools.partial(
                    self.member.advance_cursor, verdict.last, store_id=rx.store_id
                )
                await self.durable.run(give_up)
                for event in missing([(verdict.first, verdict.last)], rx.relay):
                    self._emit(event)
