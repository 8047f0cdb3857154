"""Sealing and sending: what a member seals goes out on every connection until the relay
has ACCEPTED it (docs/PROTOCOL.md sections 5 and 8).

- Only bytes already in the durable outbox are sent: `seal` returns after
  `Member.seal_many` has committed (in the durable worker, `durable.py`), and every
  connection sends `Member.pending()` again, byte for byte, until each is ACCEPTED.
  Nothing is ever re-sealed; the relay answers a repeated (sender, counter) with the seq
  it already stored.
- ACCEPTED is recorded durably (`Member.mark_accepted`) before MessageAccepted is
  emitted and before `wait_accepted` returns.
- Every seal is followed by the pad warnings (PadLow once, PadExhausted).
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import GhostlineError, PadExhaustedError
from ..protocol.frames import FrameType, encode_frame
from ..state.usage import PadLeft
from .durable import Durable
from .events import Event, MessageAccepted, PadExhausted, PadLow, missing
from .session import Session

if TYPE_CHECKING:
    from ..state.member import Member, OutboxEntry


class OutQueue:
    """What one connection has to send, in order: what was pending when it began, then
    what is sealed while it lasts (each once)."""

    def __init__(self) -> None:
        self.entries: deque[OutboxEntry] = deque()
        self.wake = asyncio.Event()
        self._early: list[OutboxEntry] = []  # sealed before `pending()` was read
        self._pending_upto: int | None = None  # the highest counter `pending()` held

    def add(self, entries: list[OutboxEntry]) -> None:
        if self._pending_upto is None:
            self._early.extend(entries)  # `start` will tell which `pending()` holds
            return
        self.entries.extend(e for e in entries if e.counter > self._pending_upto)
        self.wake.set()

    def start(self, pending: list[OutboxEntry]) -> None:
        upto = self._pending_upto = pending[-1].counter if pending else -1
        self.entries.extend(pending)
        self.entries.extend(e for e in self._early if e.counter > upto)
        self._early = []
        self.wake.set()


class Outbox:
    def __init__(self, member: Member, durable: Durable, emit: Callable[[Event], None]) -> None:
        self.member = member
        self.durable = durable
        self._emit = emit
        self.accepted: dict[int, int] = {}  # counter -> seq, as the relay ACCEPTED them
        self._waiters: dict[int, list[asyncio.Future[int]]] = {}
        self._queue: OutQueue | None = None  # the current connection's
        self._pad_low_reported = False

    # -- sealing ----------------------------------------------------------------------

    async def seal(self, payloads: list[bytes]) -> list[OutboxEntry]:
        """Seal `payloads` in one commit and queue them; all or nothing."""
        try:
            entries, _ = await self.durable.run(self._seal, payloads, then=self._sealed)
        except PadExhaustedError:
            self._emit(PadExhausted())
            raise
        return entries

    def _seal(self, payloads: list[bytes]) -> tuple[list[OutboxEntry], PadLeft]:
        """In the worker: seal, and read what is left (it only reads)."""
        entries = self.member.seal_many(payloads)
        return entries, self.member.own_pad()

    def _sealed(self, sealed: tuple[list[OutboxEntry], PadLeft]) -> None:
        entries, pad = sealed
        if entries:
            self._check_pad(pad)
        self.queue(entries)

    def queue(self, entries: list[OutboxEntry]) -> None:
        """Entries sealed (and committed) elsewhere, to send on the current connection
        (a gift: `giving.py`)."""
        if self._queue is not None:
            self._queue.add(entries)

    def _check_pad(self, pad: PadLeft) -> None:
        if pad.level == "exhausted":
            self._emit(PadExhausted())
        elif pad.level != "ok" and not self._pad_low_reported:
            self._pad_low_reported = True
            self._emit(PadLow(pad.fraction_left))

    # -- one connection -----------------------------------------------------------------

    async def begin(self, queue: OutQueue) -> int:
        """A connection joined: from now on what is sealed goes to `queue`, after what
        the outbox holds. Returns how many entries wait to be sent."""
        self._queue = queue
        queue.start(await self.durable.run(self.member.pending))
        return len(queue.entries)

    def end(self, queue: OutQueue) -> None:
        if self._queue is queue:
            self._queue = None

    async def write_loop(self, session: Session, queue: OutQueue) -> None:
        while True:
            while queue.entries:
                entry = queue.entries.popleft()
                if entry.counter not in self.accepted:
                    session.write(encode_frame(FrameType.PUBLISH, entry.sealed))
            await session.writer.drain()
            await queue.wake.wait()
            queue.wake.clear()

    # -- ACCEPTED -----------------------------------------------------------------------

    async def on_accepted(
        self, counter: int, seq: int, *, store_id: bytes | None, settle: bool, relay: str
    ) -> None:
        """The relay stored our message `counter` as `seq`: record it, then say so."""
        if counter in self.accepted:
            return
        mark = functools.partial(self._mark, counter, seq, store_id, settle)
        await self.durable.run(mark, then=functools.partial(self._recorded, counter, seq, relay))

    def _mark(
        self, counter: int, seq: int, store_id: bytes | None, settle: bool
    ) -> list[tuple[int, int]]:
        self.member.mark_accepted(counter, seq, store_id=store_id, settle=settle)
        return self.member.take_lost()

    def _recorded(self, counter: int, seq: int, relay: str, lost: list[tuple[int, int]]) -> None:
        for event in missing(lost, relay):
            self._emit(event)
        if counter in self.accepted:
            return
        self.accepted[counter] = seq
        for fut in self._waiters.pop(counter, []):
            if not fut.done():
                fut.set_result(seq)
        self._emit(MessageAccepted(counter, seq))

    async def wait_accepted(self, counter: int, timeout: float | None) -> int:
        if counter in self.accepted:
            return self.accepted[counter]
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(counter, []).append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            waiters = self._waiters.get(counter, [])
            if fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[counter]

    def fail(self, err: GhostlineError) -> None:
        """The client stopped on `err`: whoever waits for an ACCEPTED gets it."""
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(err)
