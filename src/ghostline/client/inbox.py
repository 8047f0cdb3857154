"""Receiving: every DELIVER is opened and recorded before its event is emitted, and the
relay cursor moves only as protocol/relaycursor.py and state/cursor.py allow
(docs/PROTOCOL.md section 8, "Store identity").

- Resumes just before the cursor's anchor (`Member.relay_anchor`: the highest settled
  seq whose frame the member knows), so that the relay sends that frame again first:
  another frame there, or a head below the cursor, means the store went back (restored
  from a backup) or was replaced under the same id. That, and a WELCOME naming another
  store, restarts from seq 0 (`Resume`, `StoreChanged`); byte-for-byte copies of what
  the member already has are then settled quietly (`AlreadyReceived`).
- Every DELIVER goes through `Member.receive` in the durable worker (`durable.py`), one
  after the other in the order they came, which records the message and the cursor
  before the event is emitted. Seqs already settled are opened all the same: a
  reordered frame must not be dropped as "already processed". A rejected frame is
  reported (`MessageRejected`) and settles nothing.
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
from ..protocol.envelope import read_envelope
from ..protocol.frames import SEQ_LIMIT, Welcome
from ..protocol.relaycursor import (
    Anchor,
    AnchorCheck,
    AnchorVerdict,
    GapWatch,
    Lost,
    Refetch,
    RelayCursor,
    SeqGuard,
    frame_digest,
)
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


@dataclass(frozen=True)
class Resumption:
    """Where one connection asks the relay to resume (HELLO's resume_after), and why."""

    after: int
    cursor: RelayCursor | None  # None: a send-only client
    anchor: Anchor | None  # checked on this connection when `after` is just before it


@dataclass
class Receiving:
    """One connection's view of the relay's seqs, from its WELCOME on."""

    relay: str
    store_id: bytes  # the store the seqs belong to
    guard: SeqGuard  # refuses seqs the relay cannot have assigned yet
    gaps: GapWatch | None  # the watch over holes (None: a send-only client)
    anchor: AnchorCheck | None = None  # the check that the store did not go back


Outcome = tuple["Received | RejectedMessage | AlreadyReceived | None", list[tuple[int, int]]]


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

    async def resumption(self) -> Resumption:
        """Where to ask the relay to resume: just before the anchor, so that the relay
        sends its frame again and `enter` can check it; else after the cursor."""
        if not self.receive:
            return Resumption(NOTHING_STORED, None, None)
        cursor, anchor = await self.durable.run(self._resume_state)
        return Resumption(anchor.resume_after if anchor else cursor.upto, cursor, anchor)

    def _resume_state(self) -> tuple[RelayCursor, Anchor | None]:
        return self.member.relay_state(), self.member.relay_anchor()

    async def enter(self, relay: str, welcome: Welcome, asked: Resumption) -> Receiving:
        """WELCOME came: take the cursor of the store it names (protocol-v2 section 8).
        A store other than the cursor's restarts from 0; so does the same store with a
        head below the cursor (it went back). If we asked for more than 0, the relay
        skips seqs 1..asked, so connect again (`Resume`)."""
        if asked.cursor is None:
            return Receiving(relay, welcome.store_id, SeqGuard(welcome.head), None)
        before, now = await self.durable.run(self._enter_store, welcome.store_id)
        if before.store_id not in (None, welcome.store_id):
            self._emit(StoreChanged(relay, before.upto))
            if asked.after > 0:
                raise Resume("the relay's store changed: catching up from its first message")
        elif before.went_back(welcome.head):
            now = await self._went_back(relay, welcome.store_id, before, asked.after)
        guard = SeqGuard(max(welcome.head, asked.after))
        rx = Receiving(relay, welcome.store_id, guard, GapWatch(self.gap_wait, welcome.head, now))
        anchor = asked.anchor
        if anchor is not None and now.upto > 0 and asked.after == anchor.resume_after:
            rx.anchor = AnchorCheck(anchor)
        return rx

    def _enter_store(self, store_id: bytes) -> tuple[RelayCursor, RelayCursor]:
        before = self.member.enter_relay_store(store_id)
        return before, self.member.relay_state()

    async def _went_back(
        self, relay: str, store_id: bytes, before: RelayCursor, asked: int
    ) -> RelayCursor:
        """The relay's store lost messages this member had read: read it from 0 again,
        as for another store. Returns the cursor now (if no `Resume` is raised)."""
        await self.durable.run(self.member.restart_relay_store, store_id)
        self._emit(StoreChanged(relay, before.upto, went_back=True))
        if asked > 0:
            raise Resume("the relay's store went back: catching up from its first message")
        return await self.durable.run(self.member.relay_state)

    async def on_deliver(self, rx: Receiving, seq: int, sealed: bytes) -> None:
        """Open and record the message the relay delivered as `seq`, then say what came."""
        if not self.receive or self.full:
            return
        if rx.anchor is not None and rx.anchor.verdict is None:
            verdict = rx.anchor.check(seq, frame_digest(sealed))
            if verdict is AnchorVerdict.DIVERGED:
                before = await self.durable.run(self.member.relay_state)
                await self._went_back(rx.relay, rx.store_id, before, rx.anchor.anchor.seq)
        opening = functools.partial(self._open, seq, sealed, rx.store_id)
        await self.durable.run(opening, then=functools.partial(self._opened, rx.relay, seq))

    def _open(self, seq: int, sealed: bytes, store_id: bytes) -> Outcome:
        # receive() commits the message and the cursor before we report anything; a
        # rejected frame writes nothing.
        try:
            received = self.member.receive(seq, sealed, store_id=store_id)
        except RejectedMessage as err:
            return err, self.member.take_lost()
        # None: a copy of what we have, settled: our own message echoed, or another's again.
        if received is None and read_envelope(sealed).sender != self.member.index:
            return AlreadyReceived(seq), self.member.take_lost()
        return received, self.member.take_lost()

    def _opened(self, relay: str, seq: int, outcome: Outcome) -> None:
        received, lost = outcome
        if isinstance(received, RejectedMessage):
            self._emit(MessageRejected(seq, received.rule, received.message))
        elif isinstance(received, AlreadyReceived):
            self._emit(received)
        for event in missing(lost, relay):
            self._emit(event)
        if received is None or isinstance(received, RejectedMessage | AlreadyReceived):
            return
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
