"""Sealing and sending: what a member seals goes out on every connection until the relay
has ACCEPTED it (docs/PROTOCOL.md sections 5 and 8).

- Only bytes already in the durable outbox are sent: `seal` returns after
  `Member.seal_many` has committed (in the durable worker, `durable.py`), and every
  connection sends what is pending again, byte for byte, until each is ACCEPTED.
  Nothing is ever re-sealed; the relay answers a repeated (sender, counter) with the seq
  it already stored.
- Each connection sends, in counter order and each once: what was pending when it began
  (the counters up to the highest pending one then), then what is sealed while it
  lasts. What was pending is read from the outbox a page at a time (`Outbox.page`, the
  one home of the limit: `PAGE` unless a test shrinks it), in the durable worker, when
  the last page has gone to the socket; what is sealed meanwhile waits in memory up to
  a page and is read back from the outbox beyond that. So a connection holds about two
  pages, whatever the outbox holds (a file sealed offline may be gigabytes). What is
  ACCEPTED meanwhile is not sent again.
- ACCEPTED is recorded durably (`Member.mark_accepted`) before MessageAccepted is
  emitted and before `wait_accepted` returns.
- Every seal is followed by the pad warnings (PadLow once, PadExhausted).
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import GhostlineError, PadExhaustedError
from ..protocol.frames import FrameType, encode_frame
from ..state.usage import PadLeft
from .durable import Durable
from .events import Event, MessageAccepted, PadExhausted, PadLow, missing
from .session import Session

if TYPE_CHECKING:
    from ..state.member import Member, OutboxEntry


@dataclass(frozen=True)
class PageLimit:
    """How much of the outbox a connection holds at a time: at most `size` sealed bytes
    or `entries` messages, whichever comes first (but one message, however long)."""

    size: int
    entries: int


PAGE = PageLimit(size=8 * 1024 * 1024, entries=256)


class OutQueue:
    """What one connection has to send, in counter order, each once: the pending
    messages with counters up to `upto`, read from the outbox a page at a time (those up
    to `after` are read), then what is sealed while it lasts (`later`, until it holds
    more than a `page`, the outbox's limit passed in: then `upto` moves past it and it
    is read back from the outbox)."""

    def __init__(self) -> None:
        self.entries: deque[OutboxEntry] = deque()  # to write now
        self.later: deque[OutboxEntry] = deque()  # sealed during the connection
        self.wake = asyncio.Event()
        self.started = False  # the outbox was first read (`start`)
        self.upto = -1
        self.after = -1

    @property
    def paging(self) -> bool:
        """Whether the outbox may hold more for this connection than it read."""
        return self.started and self.after < self.upto

    def start(self, span: tuple[int, int], page: PageLimit) -> None:
        """The outbox held messages up to counter `span[1]` when the connection began;
        what was sealed before that is among them."""
        self.started, self.upto = True, span[1]
        held = [e for e in self.later if e.counter > self.upto]
        self.later.clear()
        self._keep(held, page)

    def add(self, entries: list[OutboxEntry], page: PageLimit) -> None:
        """Entries sealed (and committed) during the connection, in the order of their
        commits (`Durable`'s `then`), so in counter order: what the outbox holds up to
        `upto` is read from it (whenever this comes), what is beyond is kept."""
        if not self.started:
            self.later.extend(entries)  # `start` will tell which the outbox holds
        else:
            self._keep([e for e in entries if e.counter > self.upto], page)
        self.wake.set()

    def _keep(self, entries: list[OutboxEntry], page: PageLimit) -> None:
        self.later.extend(entries)
        size = sum(len(e.sealed) for e in self.later)
        if self.later and (size > page.size or len(self.later) > page.entries):
            # More than a page: the outbox holds them too, and gives them back in turn.
            self.upto = max(self.upto, *(e.counter for e in self.later))
            self.later.clear()

    def paged(self, page: tuple[list[OutboxEntry], int]) -> None:
        """A page of the outbox, read for counters up to `page[1]`: none means none is
        left up to there."""
        entries, upto = page
        self.entries.extend(e for e in entries if e.counter > self.after)
        self.after = max(self.after, entries[-1].counter if entries else upto)

    def take_later(self) -> bool:
        """Move what was sealed during the connection to `entries`; False if nothing was."""
        if not self.later:
            return False
        taken = sorted(self.later, key=lambda e: e.counter)
        self.later.clear()
        self.entries.extend(taken)
        self.after = self.upto = max(self.after, taken[-1].counter)
        return True


class Outbox:
    def __init__(self, member: Member, durable: Durable, emit: Callable[[Event], None]) -> None:
        self.member = member
        self.durable = durable
        self._emit = emit
        self.accepted: dict[int, int] = {}  # counter -> seq, as the relay ACCEPTED them
        self._waiters: dict[int, list[asyncio.Future[int]]] = {}
        self._queue: OutQueue | None = None  # the current connection's
        # How much of the outbox a connection holds at a time; its queue is told it
        # whenever it decides (tests shrink it here, before or during a connection).
        self.page = PAGE
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
            self._queue.add(entries, self.page)

    def _check_pad(self, pad: PadLeft) -> None:
        if pad.level == "exhausted":
            self._emit(PadExhausted())
        elif pad.level != "ok" and not self._pad_low_reported:
            self._pad_low_reported = True
            self._emit(PadLow(pad.fraction_left))

    # -- one connection -----------------------------------------------------------------

    async def begin(self, queue: OutQueue) -> int:
        """A connection joined: from now on what is sealed goes to `queue`, after what
        the outbox holds. Returns how many entries wait in the outbox to be sent."""
        self._queue = queue
        span = await self.durable.run(self.member.pending_span)
        queue.start(span, self.page)
        return span[0]

    def end(self, queue: OutQueue) -> None:
        if self._queue is queue:
            self._queue = None

    async def write_loop(self, session: Session, queue: OutQueue) -> None:
        while True:
            if not queue.entries and not await self._refill(queue):
                await queue.wake.wait()
                queue.wake.clear()
                continue
            while queue.entries:
                entry = queue.entries.popleft()
                if entry.counter not in self.accepted:
                    session.write(encode_frame(FrameType.PUBLISH, entry.sealed))
            await session.writer.drain()  # so the socket's buffer holds no more than a page

    async def _refill(self, queue: OutQueue) -> bool:
        """Give `queue` the next entries to write: a page of the outbox, or what was
        sealed during the connection. False when there are none."""
        while queue.paging:
            read = functools.partial(self._page, queue.after, queue.upto, self.page)
            queue.paged(await self.durable.run(read))
            if queue.entries:
                return True
        return queue.take_later()

    def _page(self, after: int, upto: int, page: PageLimit) -> tuple[list[OutboxEntry], int]:
        """In the worker: the pending entries after `after` up to `upto`, one page."""
        return self.member.pending_page(after, upto, page.size, page.entries), upto

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
