"""The lines of the conversation: what each history entry and each received payload
shows as, and where "new since you left" goes. Values only (`ChatLine`); the app puts
them into the message log.

History is read in relay order a page at a time; older pages go before the oldest
entry shown. The marker goes before the first message received since the app last
closed: in the history, or, when nothing new was stored, before the first message
that arrives live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import PayloadError
from ..files import UnfinishedSend
from ..protocol.payload import FileChunk, FileHeader, GrantPayload, Payload, TextPayload, decode
from ..wording.filelines import file_text
from ..wording.padtalk import gift_text
from .messagelog import ChatLine


class Conversation:
    """Turns history entries and payloads into chat lines for one member's view."""

    def __init__(self, names: list[str], me: int) -> None:
        self.names = names
        self.me = me
        # transfer id -> own file not all sent (the file transfers fill it in)
        self.unfinished_sends: dict[bytes, UnfinishedSend] = {}
        # The history id of the first message received since the app last closed; None
        # once its marker is placed, or if there is none.
        self.unseen: int | None = None
        # Nothing new was stored: the first message received live gets the marker.
        self.new_since_live = False

    def start(self, unseen: int | None, chat_seen: int | None) -> None:
        """Where the marker goes, from the member's record of when the app last closed."""
        self.unseen = unseen
        self.new_since_live = unseen is None and chat_seen is not None

    def take_new_since_live(self) -> bool:
        """Whether the line received now gets the marker (once)."""
        due, self.new_since_live = self.new_since_live, False
        return due

    def page(self, entries: Sequence[Any]) -> list[ChatLine]:
        """The lines of a page of history (in relay order, older than what is shown),
        with "new since you left" before the first unseen entry if it is here."""
        lines: list[ChatLine] = []
        due = False  # the first unseen entry was on this page: the marker is due
        for entry in entries:
            if self.unseen is not None and entry.history_id == self.unseen:
                due, self.unseen = True, None
            line = self.history_line(entry)
            if line is None:
                continue  # a file part: a marker due here goes before the next line
            if due:
                lines.append(ChatLine("new", line.timestamp, ""))
                due = False
            lines.append(line)
        if due and lines:
            lines.append(ChatLine("new", lines[-1].timestamp, ""))  # just below this page
        return lines

    def history_line(self, entry: Any) -> ChatLine | None:
        own = entry.sender == self.me
        try:
            obj: Payload | None = decode(entry.payload)
        except PayloadError:
            obj = None
        return self.line_for(
            entry.sender,
            obj,
            timestamp=entry.recorded_at,
            counter=entry.counter if own else None,
            state="stored" if entry.state == "stored" else "sealed",
            seq=entry.seq,
            refused=entry.grant_refused,
        )

    def line_for(
        self,
        sender: int,
        obj: Payload | None,
        *,
        timestamp: float,
        counter: int | None = None,
        state: str = "sealed",
        seq: int | None = None,
        refused: str | None = None,
    ) -> ChatLine | None:
        """The line for a message (None for a file chunk: its file has a line). A grant
        is a notice ("alice gave bob 96 KiB of pad"), a warning when `refused` here."""
        own = sender == self.me
        name = "you" if own else self.names[sender]
        if obj is None:
            return ChatLine(
                "warning",
                timestamp,
                f"a message from {name} opened correctly but its content is malformed",
            )
        if isinstance(obj, FileChunk):
            return None
        when = float(obj.sent_at) if obj.sent_at else timestamp
        if isinstance(obj, GrantPayload):
            kind, said = gift_text(self.names, self.me, sender, obj, refused)
            return ChatLine(kind, when, said, seq=seq)
        if isinstance(obj, TextPayload):
            text = obj.text
        elif own:
            text = self.own_file_text(obj)
            if obj.transfer_id in self.unfinished_sends:
                counter = None  # no delivery state: the file as a whole was not sent
        else:
            text = file_text(obj, own=False)
        return ChatLine(
            "message",
            when,
            text,
            sender=sender,
            sender_name=name,
            own=own,
            counter=counter if own else None,
            state=(state if own and counter is not None else None),  # type: ignore[arg-type]
            seq=seq,
        )

    def own_file_text(self, header: FileHeader) -> str:
        send = self.unfinished_sends.get(header.transfer_id)
        unfinished = None if send is None else (send.chunks_sealed, send.sent_again)
        return file_text(header, own=True, unfinished=unfinished)
