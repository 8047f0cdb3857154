"""`WebSession`'s handling of the client's events: each becomes what every page is sent
(a line, a delivery state, the members and pads, the connection), told as the terminal
chat app tells it (`wording.eventlines.event_sentence`), a relay failing the same way each time
once a minute (`Repeats`), presence changes as `presencenotes` allows. A mixin of
`WebSession` (session.py): its methods, in their own file by job.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from ..client import (
    ConnectionChanged,
    MessageAccepted,
    MessageReceived,
    MessageRejected,
    PadExhausted,
    PadGiven,
    PadLow,
    PresenceChanged,
)
from ..files import IncomingFiles, OutgoingFiles
from ..presencenotes import PresenceNote, PresenceWatch
from ..protocol.payload import FileChunk, FileHeader, GrantPayload
from ..protocol.rules import Rule
from ..wording.eventlines import event_sentence
from ..wording.padtalk import gift_text
from ..wording.presence import presence_note_text
from ..wording.repeats import Repeats
from . import lines as view
from .transfers import Transfers


class SessionEvents:
    me: int
    names: list[str]
    clock: Callable[[], float]
    connection: dict[str, Any]
    presence: PresenceWatch
    incoming: IncomingFiles
    outgoing: OutgoingFiles
    transfers: Transfers
    _repeats: Repeats
    _stopped: bool
    # WebSession's (session.py, sessionhistory.py):
    broadcast: Callable[[dict[str, Any]], None]
    spawn: Callable[[Coroutine[Any, Any, Any]], None]
    reread_pads: Callable[[], Coroutine[Any, Any, None]]
    used: Callable[[int, int, int], None]
    members: Callable[[], dict[str, Any]]
    add_line: Callable[[dict[str, Any]], None]
    _note: Callable[[Any, str], None]
    warn: Callable[[str], None]
    notice: Callable[[str], None]
    unstored: Callable[[], view.OwnState]
    line_for: Callable[..., dict[str, Any] | None]

    def handle_event(self, event: object) -> None:
        if isinstance(event, MessageReceived | MessageAccepted):
            self._repeats.useful()
        if isinstance(event, MessageReceived):
            self._on_received(event)
        elif isinstance(event, MessageAccepted):
            self.broadcast({"type": "state", "id": view.message_id(self.me, event.counter),
                            "state": "stored"})  # fmt: skip
            outgoing = self.outgoing.accepted(event.counter)
            if outgoing is not None:
                self.transfers.outgoing_progress(outgoing)
        elif isinstance(event, PresenceChanged):
            self._on_presence(event)
        elif isinstance(event, ConnectionChanged):
            self._on_connection(event)
        elif isinstance(event, PadLow | PadExhausted):
            self.spawn(self.reread_pads())
        elif isinstance(event, PadGiven):
            to = self.names[event.grant.to]
            kind, text = gift_text(
                self.names, self.me, self.me, GrantPayload(*event.grant, 0), None
            )
            self._note(kind, f"{text} (automatically: {to} was running low)")
            self.spawn(self.reread_pads())
        elif (said := event_sentence(event)) is not None:
            kind, text = said
            if (line := self._repeats.line(text, text)) is not None:
                self._note(kind, line)
            if isinstance(event, MessageRejected) and event.rule == Rule.BAD_TAG:
                self.spawn(self.reread_pads())  # the sender's failed count went up

    def _on_received(self, event: MessageReceived) -> None:
        received = event.received
        obj = event.payload_obj
        item = self.line_for(
            received.sender, received.counter, obj, self.clock(), refused=received.grant_refused
        )
        if item is not None:
            self.add_line(item)
        if isinstance(obj, FileHeader | FileChunk):
            update = self.incoming.add(received.sender, self.names[received.sender], obj)
            self.transfers.incoming_update(update)
        self.used(received.sender, received.counter, received.offset + received.pad_used)

    def _on_presence(self, event: PresenceChanged) -> None:
        # Only real changes are told, as `presencenotes` allows (a member coming and
        # going in a loop is folded).
        self._tell(self.presence.changed(event.online, event.joined, event.left, self.clock()))
        self.broadcast(self.members())

    def presence_due(self) -> None:
        """Tell the presence changes held back whose time came."""
        self._tell(self.presence.due(self.clock()))

    def _tell(self, notes: list[PresenceNote]) -> None:
        for note in notes:
            self.notice(presence_note_text(note, self.names[note.member]))

    def _on_connection(self, event: ConnectionChanged) -> None:
        if event.channel == "presence":
            down = event.retry_in is not None
            self.presence.channel(down)
            self.connection = {
                **self.connection,
                "presence": view.safe(event.detail) if down else None,
            }
            self.broadcast(self.connection)
            self.broadcast(self.members())
            return
        was = self.connection.get("state")
        self.connection = {
            "type": "connection",
            "state": event.state,
            "relay": view.safe(event.relay),
            "retry_in": event.retry_in,
            "detail": view.safe(event.detail),
            "presence": self.connection.get("presence"),
            "failure": None,
        }
        if event.state == "stopped" and not self._stopped and event.detail != "stopped":
            # A fatal refusal (wrong kit set, bad signature): retrying would not help.
            self.connection["failure"] = view.safe(event.detail)
            self.warn(f"disconnected for good: {event.detail}")
        self.broadcast(self.connection)
        if (was == "connected") != (event.state == "connected"):
            self.broadcast({"type": "unstored", "state": self.unstored()})
