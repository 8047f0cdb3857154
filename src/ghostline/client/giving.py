"""Automatic giving (format 2): after each message, the member's giving policy may give
part of its unused pad to a member running low (`Member.auto_give`, policy in
`state/giving.py`).

It runs in the durable worker like every commit, and only once the member has caught
up with the relay (its cursor has reached the head the relay named at WELCOME): while
old messages are still coming in, its figures of the others are old, and it would give
to a member whom others have already given to. It looks at most once every INTERVAL
seconds (the figures read every member's totals; messages that come meanwhile are
looked at together). A gift is queued like any sealed message and reported as
`PadGiven`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from .durable import Durable
from .events import Event, PadGiven
from .outbox import Outbox

if TYPE_CHECKING:
    from ..state.member import Gift, Member


INTERVAL = 0.5


class Giver:
    def __init__(
        self,
        member: Member,
        durable: Durable,
        outbox: Outbox,
        emit: Callable[[Event], None],
        *,
        interval: float = INTERVAL,
    ) -> None:
        self.member = member
        self.durable = durable
        self.outbox = outbox
        self._emit = emit
        self._wake = asyncio.Event()
        self.head: int | None = None  # the relay's head at the last WELCOME
        self.interval = interval

    def poke(self) -> None:
        """Something changed (a message seen, a connection made): look again."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.head is None:
                continue  # never connected: nothing known of the others yet
            gift = await self.durable.run(self._maybe_give, self.head, then=self._given)
            if gift is not None:
                self._wake.set()  # another member may be running low too
            # A rate, not a wait for anything: pokes meanwhile set `_wake` and are served
            # together after it.
            await asyncio.sleep(self.interval)

    def _maybe_give(self, head: int) -> Gift | None:
        if self.member.relay_state().upto < head:
            return None  # still catching up: the figures are old
        return self.member.auto_give()

    def _given(self, gift: Gift | None) -> None:
        if gift is None:
            return
        self.outbox.queue([gift.entry])
        self._emit(PadGiven(gift.grant, gift.entry.counter))
