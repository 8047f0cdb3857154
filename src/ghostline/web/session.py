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
from ..display import one_line
from ..errors import GhostlineError
from ..files import (
    IncomingFiles,
    IncomingUpdate,
    OutgoingFiles,
    UnfinishedSend,
    record_in,
)
from ..presencenotes import PresenceWatch
from ..protocol.payload import encode_text
from ..state.usage import PadLeft, after_message
from ..wording.repeats import Repeats
from . import lines as view
from .seen import SeenMarker
from .sessionevents import SessionEvents
from .sessionhistory import SessionHistory
from .transfers import Transfers

log = logging.getLogger("ghostline.web")

HISTORY_PAGE = 100
NOTICES_KEPT = 200

Send = Callable[[dict[str, Any]], None]


class WebSession(SessionHistory, SessionEvents):
    """See the module docstring. `start` once, then `attach` a page per WebSocket. What
    a page reads of the history is `sessionhistory.py`'s, the client's events
    `sessionevents.py`'s: one class, its methods in three files by job."""

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
        self.presence = PresenceWatch(self.me, len(self.names))
        self._repeats = Repeats()  # a relay failing the same way each time says it once a minute
        self.pads: dict[int, PadLeft] = {}
        self.failed: dict[int, int] = {}
        self.moving = header.format != 1  # format 2: pad moves, figures are read again
        self._reads = itertools.count()
        self._shown_read = -1
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
        self.pads, self.failed = await asyncio.to_thread(self._read_pads)
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
            due = self.presence.next_due()
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

    def members(self) -> dict[str, Any]:
        presence = self.presence
        return view.members_view(
            self.names, self.me, self.pads, presence.online, not presence.down, self.failed
        )

    # -- lines -------------------------------------------------------------------------

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

    # -- pads --------------------------------------------------------------------------

    def used(self, sender: int, counter: int, end: int) -> None:
        """A message of `sender` used key `counter` and pad up to `end` (format 2: the
        figures are read again, as grants move pad both ways)."""
        if self.moving:
            self.spawn(self.reread_pads())
            return
        if sender in self.pads:
            self.pads = {
                **self.pads,
                sender: after_message(self.pads[sender], counter=counter, end=end),
            }
        self.broadcast(self.members())

    async def reread_pads(self) -> None:
        read = next(self._reads)
        pads, failed = await asyncio.to_thread(self._read_pads)
        if read < self._shown_read:
            return  # a newer read has been shown already
        self._shown_read = read
        self.pads, self.failed = pads, failed
        self.broadcast(self.members())

    def _read_pads(self) -> tuple[dict[int, PadLeft], dict[int, int]]:
        return self.member.pads(), self.member.failed_verifications()

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
