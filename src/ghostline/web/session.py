"""One member's chat for the web page: the client's events in, JSON for the page out.

It mirrors the terminal chat app (`tui/app.py`) and owns no protocol logic: sealing,
sending and reconnecting are the `Client`'s, file transfer is `ghostline.files`'.
What it keeps is what a page needs when it (re)connects: the connection state, who is
online, every pad, the file transfers, and the notices shown since the start (they are
not in the history). Every page connected gets every update (`broadcast`).

Durable work never runs on the event loop: sealing goes through `Client.send_many`
(a worker thread), history reads, usage scans and file saves through
`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import paths
from ..cli.relaystatus import Repeats, presence_note_text
from ..client import (
    ConnectionChanged,
    MessageAccepted,
    MessageReceived,
    PadExhausted,
    PadLow,
    PresenceChanged,
)
from ..display import one_line
from ..errors import GhostlineError, PayloadError
from ..files import (
    IncomingFiles,
    IncomingUpdate,
    OutgoingFiles,
    UnfinishedSend,
    record_in,
)
from ..historypages import HistoryPages
from ..presencenotes import PresenceNote, PresenceNotes
from ..protocol.payload import FileChunk, FileHeader, Payload, decode, encode_text
from ..state.usage import PadLeft, after_message
from ..tui.view import event_sentence, file_text
from . import lines as view
from .seen import SeenMarker
from .transfers import Transfers

log = logging.getLogger("ghostline.web")

HISTORY_PAGE = 100
NOTICES_KEPT = 200

Send = Callable[[dict[str, Any]], None]


class WebSession:
    """See the module docstring. `start` once, then `attach` a page per WebSocket."""

    def __init__(
        self,
        client: Any,
        *,
        relay: str,
        transport: str,
        downloads: Callable[[], Path] = paths.downloads_dir,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = os.urandom,
        history_page: int = HISTORY_PAGE,
    ) -> None:
        self.client = client
        self.member = client.member
        header = self.member.header
        self.me: int = header.self_index
        self.names = [one_line(m.name) for m in header.members]
        self.group = one_line(header.group)
        self.relay = one_line(relay)
        self.transport = transport
        self.clock = clock
        self.random_bytes = random_bytes
        self.history_page = history_page
        self.pages: set[Send] = set()
        self.notices: deque[dict[str, Any]] = deque(maxlen=NOTICES_KEPT)
        self._notice_ids = itertools.count()
        self.connection: dict[str, Any] = {"type": "connection", "state": "connecting"}
        self.online: frozenset[int] = frozenset()
        self.presence_down = False
        self._presence_resync = False
        self._presence = PresenceNotes()
        self._repeats = Repeats()  # a relay failing the same way each time says it once a minute
        self.pads: dict[int, PadLeft] = {}
        self.incoming = IncomingFiles(downloads, record=record_in(self.member))
        self.outgoing = OutgoingFiles()
        self.transfers = Transfers(self)
        self.unfinished_sends: dict[bytes, UnfinishedSend] = {}
        self.seen = SeenMarker(self.member.state_path)
        self.files_ready = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, *, connect: bool = True) -> None:
        """Read the pads and rebuild unfinished transfers (before any event is read, so
        a live part never meets a transfer history has not filled in), then connect."""
        self.pads = await asyncio.to_thread(self.member.pads)
        await self.seen.load()
        await self.transfers.resume()
        await self.transfers.load_saved()
        if connect:
            await self.client.start()
            self._pump = asyncio.create_task(self._pump_events(), name="ghostline-web-events")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await self.client.stop()
        for task in list(self._tasks):
            task.cancel()
        self.transfers.discard_offers()

    def spawn(self, coro: Any) -> None:
        """Run `coro` in the background; an error in it becomes a visible warning."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            err = task.exception()
            log.error("ghostline web: a background task failed", exc_info=err)
            self.warn(f"something went wrong: {err}")

    async def _pump_events(self) -> None:
        while True:
            due = self._presence.next_due()
            try:
                async with asyncio.timeout(None if due is None else max(0.0, due - self.clock())):
                    event = await self.client.events.get()
            except TimeoutError:
                self.presence_due()
                continue
            try:
                self.handle_event(event)
            except Exception as err:  # one bad event must not stop the page's updates
                log.error("ghostline web: could not show an event", exc_info=err)
                self.warn(f"could not show an event: {err}")

    # -- pages -----------------------------------------------------------------------

    def attach(self, send: Send) -> None:
        self.pages.add(send)

    def detach(self, send: Send) -> None:
        self.pages.discard(send)

    def broadcast(self, message: dict[str, Any]) -> None:
        for send in list(self.pages):
            send(message)

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

    def members(self) -> dict[str, Any]:
        return view.members_view(
            self.names, self.me, self.pads, self.online, not self.presence_down
        )

    # -- lines -------------------------------------------------------------------------

    def history_lines(self, entries: list[Any]) -> list[dict[str, Any] | None]:
        """The line of each entry (None for one not shown: a file chunk), in order."""
        return [
            self.line_for(
                entry.sender,
                entry.counter,
                _decoded(entry.payload),
                entry.recorded_at,
                self._entry_state(entry),
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
    ) -> dict[str, Any] | None:
        """A message's line; a long text is folded unless `whole` (see `view.line`)."""
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
        unfinished = None
        if own and isinstance(obj, FileHeader):
            unfinished = self._unfinished_text(obj)
            if unfinished is not None:
                state = None  # the file as a whole was not sent: no delivery state
        text = view.payload_text(obj, own=own, unfinished=unfinished)
        if text is None:
            return None
        when = float(obj.sent_at) if getattr(obj, "sent_at", 0) else timestamp
        return view.line(
            "message", when, text, ident=ident, sender=sender, name=name, own=own,
            state=state if own else None, whole=whole,
        )  # fmt: skip

    def _unfinished_text(self, header: FileHeader) -> str | None:
        send = self.unfinished_sends.get(header.transfer_id)
        if send is None:
            return None
        return file_text(header, own=True, unfinished=(send.chunks_sealed, send.sent_again))

    def add_line(self, item: dict[str, Any]) -> None:
        self.broadcast({"type": "line", "line": item})

    def _note(self, kind: Any, text: str) -> None:
        item = view.line(kind, self.clock(), text, ident=f"n{next(self._notice_ids)}")
        self.notices.append(item)
        self.add_line(item)

    def warn(self, text: str) -> None:
        self._note("warning", text)

    def notice(self, text: str) -> None:
        self._note("notice", text)

    # -- client events -----------------------------------------------------------------

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
        elif (said := event_sentence(event)) is not None:
            kind, text = said
            if (line := self._repeats.line(text, text)) is not None:
                self._note(kind, line)

    def _on_received(self, event: MessageReceived) -> None:
        received = event.received
        obj = event.payload_obj
        item = self.line_for(received.sender, received.counter, obj, self.clock())
        if item is not None:
            self.add_line(item)
        if isinstance(obj, FileHeader | FileChunk):
            update = self.incoming.add(received.sender, self.names[received.sender], obj)
            self.transfers.incoming_update(update)
        self.used(received.sender, received.counter, received.offset + len(received.payload))

    def _on_presence(self, event: PresenceChanged) -> None:
        self.online = event.online
        quiet = self.presence_down or self._presence_resync
        self._presence_resync = False
        if not quiet:
            # Presence dropped or has just come back (everyone it lists "joins"):
            # neither is someone coming or going, so only real changes are told, as
            # `presencenotes` allows (a member coming and going in a loop is folded).
            others = frozenset(i for i in range(len(self.names)) if i != self.me)
            self._tell(
                self._presence.changed(event.joined & others, event.left & others, self.clock())
            )
        self.broadcast(self.members())

    def presence_due(self) -> None:
        """Tell the presence changes held back whose time came."""
        self._tell(self._presence.due(self.clock()))

    def _tell(self, notes: list[PresenceNote]) -> None:
        for note in notes:
            self.notice(presence_note_text(note, self.names[note.member]))

    def _on_connection(self, event: ConnectionChanged) -> None:
        if event.channel == "presence":
            down = event.retry_in is not None
            self._presence_resync = not down
            self.presence_down = down
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

    # -- pads --------------------------------------------------------------------------

    def used(self, sender: int, counter: int, end: int) -> None:
        """A message of `sender` used key `counter` and pad up to `end`."""
        if sender in self.pads:
            self.pads = {
                **self.pads,
                sender: after_message(self.pads[sender], counter=counter, end=end),
            }
        self.broadcast(self.members())

    async def reread_pads(self) -> None:
        self.pads = await asyncio.to_thread(self.member.pads)
        self.broadcast(self.members())

    # -- sending -----------------------------------------------------------------------

    async def send_text(self, text: str) -> str | None:
        """Seal and queue `text`; None when sent, else why not (for the composer)."""
        if not text.strip():
            return "nothing to send: the message is empty"
        async with self._sending:  # in the order the person pressed enter
            now = self.clock()
            try:
                # send_many seals in a worker thread: the commit and fsync stay off the loop.
                (entry,) = await self.client.send_many([encode_text(text, int(now))])
            except GhostlineError as err:
                self.spawn(self.reread_pads())
                return f"not sent: {err}"
        item = view.line(
            "message", now, text, ident=view.message_id(self.me, entry.counter),
            sender=self.me, name="you", own=True, state=self.unstored(),
        )  # fmt: skip
        self.add_line(item)
        self.used(self.me, entry.counter, entry.offset + entry.length)
        return None

    # -- files -------------------------------------------------------------------------

    def show_saved(self, update: IncomingUpdate) -> None:
        transfer = update.transfer
        if update.error:
            self.warn(f"file {transfer.name} from {transfer.sender_name}: {update.error}")
        elif update.saved_to is not None:
            self.notice(
                f"saved {transfer.name} from {transfer.sender_name} in your downloads folder"
                + ("" if update.saved_to.name == transfer.name else f" as {update.saved_to.name}")
            )
            if update.warning:
                self.warn(update.warning)


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
