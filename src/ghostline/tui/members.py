"""The side panel's members and pads: who is online, how much pad each member has left,
your gauge and warning banner, and the input locked once your pad is used up.

Figures come from the member (`Member.pads`, read in a worker thread) and move with
every message seen live (`usage.after_message`); presence comes from the relay, and
its changes are told in the conversation as `presencenotes` allows (a member coming and
going in a loop does not fill it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual.app import App

from ..cli.relaystatus import presence_note_text
from ..client import ConnectionChanged, PresenceChanged
from ..presencenotes import PresenceNote, PresenceNotes
from ..state.usage import PadLeft, after_message
from .messagelog import ChatLine
from .view import pad_warning
from .widgets import Banner, ChatInput, MemberList, MemberRow, PadGauge, StatusBar


class MemberPanel:
    """The members and pads of one chat app (`app.panel`). `say` adds lines to the
    conversation."""

    def __init__(
        self,
        app: App[Any],
        member: Any,
        names: list[str],
        me: int,
        clock: Callable[[], float],
        say: Callable[[list[ChatLine]], None],
    ) -> None:
        self.app = app
        self.member = member
        self.names = names
        self.me = me
        self.clock = clock
        self.say = say
        self.pads: dict[int, PadLeft] = {}
        self.online: frozenset[int] = frozenset()
        self.presence_down = False
        self._presence_resync = False
        self._notes = PresenceNotes()

    # -- pads ------------------------------------------------------------------------

    def used(self, sender: int, counter: int, end: int) -> None:
        """A message of `sender` used key `counter` and pad up to `end`."""
        pads = dict(self.pads)
        pads[sender] = after_message(pads[sender], counter=counter, end=end)
        self.show_pads(pads)

    def reread(self) -> None:
        """Read every member's figures from the state again, in a worker thread (the
        member's lock may be held by a commit in another thread)."""
        self.app.run_worker(self._reread(), group="pads")

    async def _reread(self) -> None:
        read = await asyncio.to_thread(self.member.pads)
        if not self.app.is_running:
            return
        # Pad is only ever used up: what was seen live while reading stays counted.
        self.show_pads({i: _lower(self.pads.get(i), pad) for i, pad in read.items()})

    def show_pads(self, pads: dict[int, PadLeft]) -> None:
        app = self.app
        self.pads = pads
        own = pads[self.me]
        app.query_one(PadGauge).show(own)
        app.query_one(Banner).show(pad_warning(own), own.level)
        chat_input = app.query_one(ChatInput)
        exhausted = own.level == "exhausted"
        if exhausted != chat_input.disabled:
            chat_input.disabled = exhausted
            if exhausted:
                chat_input.load_text("")
                chat_input.border_title = "pad used up: sending is disabled"
            else:
                chat_input.border_title = None
        self.show_members()

    # -- presence ----------------------------------------------------------------------

    def presence_changed(self, event: PresenceChanged) -> None:
        self.online = event.online
        quiet = self.presence_down or self._presence_resync
        self._presence_resync = False
        if not quiet:
            # Else presence dropped (nobody is known to be online) or has just come back
            # (everyone it lists "joins"): neither is someone coming or going.
            others = frozenset(i for i in range(len(self.names)) if i != self.me)
            self._tell(
                self._notes.changed(event.joined & others, event.left & others, self.clock())
            )
        self.show_members()

    def presence_due(self) -> None:
        """Tell the presence changes held back whose time came (called every second)."""
        if self._notes.next_due() is not None:
            self._tell(self._notes.due(self.clock()))

    def _tell(self, notes: list[PresenceNote]) -> None:
        if notes:
            now = self.clock()
            self.say(
                [
                    ChatLine("notice", now, presence_note_text(n, self.names[n.member]))
                    for n in notes
                ]
            )

    def presence_connection(self, event: ConnectionChanged) -> None:
        """The presence channel went down or came back."""
        down = event.retry_in is not None
        # The first list after (re)connecting says who is online already; nobody in it
        # has just arrived.
        self._presence_resync = not down
        self.presence_down = down
        self.app.query_one(StatusBar).show_presence(None if not down else event.detail)
        self.show_members()

    def show_members(self) -> None:
        rows = [
            MemberRow(i, name, i in self.online, self.pads.get(i), i == self.me)
            for i, name in enumerate(self.names)
        ]
        self.app.query_one(MemberList).show(rows, presence_known=not self.presence_down)


def _lower(seen: PadLeft | None, read: PadLeft) -> PadLeft:
    """The lower of two figures of one member's pad."""
    if seen is None:
        return read
    return PadLeft(
        min(seen.bytes_left, read.bytes_left),
        read.bytes_total,
        min(seen.msgs_left, read.msgs_left),
        read.msgs_total,
    )
