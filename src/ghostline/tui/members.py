"""The side panel's members and pads: who is online, how much pad each member has left
(and how many of their messages failed their check here, when any did), your gauge and
warning banner, and the input locked once your pad is used up.

Figures come from the member (`Member.pads`, read in a worker thread). With a format-1
kit they move with every message seen live (`usage.after_message`); with a format-2
kit they are read again after each message, as grants move pad both ways (each
member's gauge is its current extents, not its first slice). Presence comes from the
relay, and its changes are told in the conversation as `presencenotes` allows (a member
coming and going in a loop does not fill it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual.app import App

from ..client import ConnectionChanged, PresenceChanged
from ..presencenotes import PresenceNote, PresenceWatch
from ..state.usage import PadLeft, after_message
from ..wording.padleft import pad_warning
from ..wording.presence import presence_note_text
from .messagelog import ChatLine
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
        self.failed: dict[int, int] = {}
        self.moving = member.header.format != 1  # format 2: pad moves between members
        self.presence = PresenceWatch(me, len(names))

    @property
    def online(self) -> frozenset[int]:
        return self.presence.online

    @property
    def presence_down(self) -> bool:
        return self.presence.down

    # -- pads ------------------------------------------------------------------------

    def used(self, sender: int, counter: int, end: int) -> None:
        """A message of `sender` used key `counter` and pad up to `end`."""
        if self.moving:
            self.reread()
            return
        pads = dict(self.pads)
        pads[sender] = after_message(pads[sender], counter=counter, end=end)
        self.show_pads(pads)

    def reread(self) -> None:
        """Read every member's figures from the state again, in a worker thread (the
        member's lock may be held by a commit in another thread)."""
        # Exclusive: the newest read wins (format 2's figures go up as well as down).
        self.app.run_worker(self._reread(), group="pads", exclusive=self.moving)

    async def _reread(self) -> None:
        read, failed = await asyncio.to_thread(self._read)
        if not self.app.is_running:
            return
        self.failed = failed
        if self.moving:
            self.show_pads(read)
            return
        # Pad is only ever used up: what was seen live while reading stays counted.
        self.show_pads({i: _lower(self.pads.get(i), pad) for i, pad in read.items()})

    def _read(self) -> tuple[dict[int, PadLeft], dict[int, int]]:
        return self.member.pads(), self.member.failed_verifications()

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
        self._tell(self.presence.changed(event.online, event.joined, event.left, self.clock()))
        self.show_members()

    def presence_due(self) -> None:
        """Tell the presence changes held back whose time came (called every second)."""
        if self.presence.next_due() is not None:
            self._tell(self.presence.due(self.clock()))

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
        self.presence.channel(down)
        self.app.query_one(StatusBar).show_presence(None if not down else event.detail)
        self.show_members()

    def show_members(self) -> None:
        rows = [
            MemberRow(
                i, name, i in self.online, self.pads.get(i), i == self.me, self.failed.get(i, 0)
            )
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
