"""`WebSession`'s history for the page: what a page shows when it opens (`snapshot`),
older pages by position (`older`), a folded message whole (`whole`), and the line each
history entry or message becomes (`line_for`). Reads run in a worker thread
(`asyncio.to_thread`). A mixin of `WebSession` (session.py): its methods, in their own
file by job.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from ..errors import PayloadError
from ..files import UnfinishedSend
from ..historypages import HistoryPages
from ..protocol.payload import FileHeader, GrantPayload, Payload, decode
from ..wording.filelines import file_text
from . import lines as view
from .seen import SeenMarker
from .transfers import Transfers


class SessionHistory:
    member: Any
    me: int
    names: list[str]
    group: str
    relay: str
    transport: str
    history_page: int
    notices: deque[dict[str, Any]]
    connection: dict[str, Any]
    transfers: Transfers
    unfinished_sends: dict[bytes, UnfinishedSend]
    seen: SeenMarker
    files_ready: bool
    # WebSession's (session.py):
    members: Callable[[], dict[str, Any]]

    def reader(self) -> HistoryPages:
        """A new reader of the history, for one page (see `snapshot` and `older`)."""
        return HistoryPages(self.member, self.history_page)

    async def snapshot(self, pages: HistoryPages | None = None) -> dict[str, Any]:
        """Everything a page shows when it opens: the newest page of history merged with
        the notices since the start, members and pads, connection, transfers. `pages`
        is the page's reader of the history, for its `older` pages."""
        pages = pages or self.reader()
        entries = await asyncio.to_thread(pages.newest)
        shown = _merge(entries, self.history_lines(entries), list(self.notices))
        return {
            "type": "snapshot",
            "group": self.group,
            "me": self.me,
            "names": self.names,
            "relay": self.relay,
            "transport": self.transport,
            "lines": shown,
            "more": pages.more,
            "seen": self.seen.key,
            "max_text": self.member.max_payload - 5,
            "connection": self.connection,
            "members": self.members(),
            "transfers": self.transfers.rows(),
            "files_ready": self.files_ready,
        }

    async def older(self, pages: HistoryPages) -> dict[str, Any]:
        """The page of history before the oldest entry `pages` has read (whatever has
        arrived since: a page's position, not a count, so nothing comes twice)."""
        older = await asyncio.to_thread(pages.older)
        return {
            "type": "older",
            "lines": [item for item in self.history_lines(older) if item is not None],
            "more": pages.more,
        }

    async def whole(self, ident: str) -> dict[str, Any]:
        """The line of message `ident` with its whole text, for a page that shows it
        folded ("show all"), read from the history."""
        key = view.message_key(ident)
        entries = [] if key is None else await asyncio.to_thread(self.member.history_of, [key])
        if not entries:
            error = "the rest of this message is not in this device's history"
            return {"type": "whole", "id": ident, "line": None, "error": error}
        entry = entries[0]
        item = self.line_for(
            entry.sender, entry.counter, _decoded(entry.payload), entry.recorded_at,
            self._entry_state(entry), whole=True,
        )  # fmt: skip
        return {"type": "whole", "id": ident, "line": item, "error": None}

    def history_lines(self, entries: list[Any]) -> list[dict[str, Any] | None]:
        """The line of each entry (None for one not shown: a file chunk), in order."""
        return [
            self.line_for(
                entry.sender,
                entry.counter,
                _decoded(entry.payload),
                entry.recorded_at,
                self._entry_state(entry),
                refused=entry.grant_refused,
            )  # fmt: skip
            for entry in entries
        ]

    def _entry_state(self, entry: Any) -> view.OwnState | None:
        if entry.sender != self.me:
            return None
        return "stored" if entry.state == "stored" else self.unstored()

    def unstored(self) -> view.OwnState:
        return "sending" if self.connection.get("state") == "connected" else "sealed"

    def line_for(
        self,
        sender: int,
        counter: int,
        obj: Payload | None,
        timestamp: float,
        state: Any = None,
        *,
        whole: bool = False,
        refused: str | None = None,
    ) -> dict[str, Any] | None:
        """A message's line; a long text is folded unless `whole` (see `view.line`). A
        grant is a notice, or a warning when it was `refused` here."""
        own = sender == self.me
        name = "you" if own else self.names[sender]
        ident = view.message_id(sender, counter)
        if obj is None:
            return view.line(
                "warning",
                timestamp,
                f"a message from {name} opened correctly but its content is malformed",
                ident=ident,
            )
        when = float(obj.sent_at) if getattr(obj, "sent_at", 0) else timestamp
        if isinstance(obj, GrantPayload):
            return view.grant_line(
                self.names, self.me, sender, obj, when, ident=ident, refused=refused
            )
        unfinished = None
        if own and isinstance(obj, FileHeader):
            unfinished = self._unfinished_text(obj)
            if unfinished is not None:
                state = None  # the file as a whole was not sent: no delivery state
        text = view.payload_text(obj, own=own, unfinished=unfinished)
        if text is None:
            return None
        return view.line(
            "message", when, text, ident=ident, sender=sender, name=name, own=own,
            state=state if own else None, whole=whole,
        )  # fmt: skip

    def _unfinished_text(self, header: FileHeader) -> str | None:
        send = self.unfinished_sends.get(header.transfer_id)
        if send is None:
            return None
        return file_text(header, own=True, unfinished=(send.chunks_sealed, send.sent_again))


def _decoded(payload: bytes) -> Payload | None:
    try:
        return decode(payload)
    except PayloadError:
        return None


def _merge(
    entries: list[Any], lines: list[dict[str, Any] | None], notices: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """History lines in history order, each notice before the first entry recorded
    after it. (Sorting by shown time would let a sender's clock reorder the history.)"""
    out: list[dict[str, Any]] = []
    pending = iter(notices)
    notice = next(pending, None)
    for entry, item in zip(entries, lines, strict=True):
        while notice is not None and notice["time"] <= entry.recorded_at:
            out.append(notice)
            notice = next(pending, None)
        if item is not None:
            out.append(item)
    if notice is not None:
        out.append(notice)
    out.extend(pending)
    return out
