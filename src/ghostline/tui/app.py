"""The chat app: renders what the client reports and hands what you type to the client.

It owns no protocol logic. Sealing, sending, resuming and reconnecting are the
`Client`'s; reading history and usage is the `Member`'s. The app keeps only what it
shows, in three parts: the conversation's lines (`conversation.py`), the file
transfers (`files.ChatFiles`), and here the pads, members, status and input.

No SQLite commit or fsync runs on the event loop: every member call that may commit
or scan (usage, "seen" on closing, saving files, older pages) goes through a worker
thread. The reads on opening run before the client starts, when nothing else holds
the member.

A fake client with the same `events` queue and `send` coroutine drives it in tests;
`clock` and `tz` make its times deterministic.

It stays one file, a little over 400 lines: what is left here is the Textual App
itself (compose, bindings, the `on_`/`action_` handlers Textual finds on it by name)
and the few lines that turn each client event or typed command into calls on the parts
that stand on their own (conversation.py, files.py, members.py, usage.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Label, Static

from .. import paths
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
from ..display import one_line
from ..errors import GhostlineError, PadExhaustedError
from ..historypages import HistoryPages
from ..protocol.payload import FileChunk, FileHeader, GrantPayload, encode_text
from ..protocol.rules import Rule
from ..wording.eventlines import event_sentence
from ..wording.hints import failure_hint
from ..wording.padtalk import gift_text
from ..wording.repeats import Repeats
from .conversation import Conversation
from .files import ChatFiles
from .members import MemberPanel
from .messagelog import ChatLine, MessageLog
from .screens import HELP_TEXT, TextScreen
from .usage import pad_table
from .widgets import Banner, ChatInput, MemberList, PadGauge, StatusBar

# Each message is a widget (about 3 ms to mount): one screenful and some, so the app
# opens in well under a second; older pages load when you scroll to the top.
HISTORY_PAGE = 60
STOP_TIMEOUT = 5.0  # seconds the connection may take to close when the app quits


class ChatClient(Protocol):
    """What the app uses of `ghostline.client.Client`."""

    member: Any
    events: asyncio.Queue[Any]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, payload: bytes) -> Any: ...

    async def send_many(self, payloads: Sequence[bytes]) -> list[Any]: ...


class ChatApp(App[None]):
    """`ghostline chat`: the message pane, members, your pad gauge and the input."""

    CSS_PATH = "chat.tcss"
    TITLE = "GhostLine"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "help", "Help"),
        Binding("f2", "info", "Pad info"),
        Binding("pageup", "scroll_log(-1)", "Scroll", priority=True, show=False),
        Binding("pagedown", "scroll_log(1)", "Scroll", priority=True, show=False),
    ]

    def __init__(
        self,
        client: ChatClient,
        *,
        relay: str,
        transport: str,
        clock: Callable[[], float] = time.time,
        tz: tzinfo | None = None,
        downloads: Callable[[], Path] = paths.downloads_dir,
        random_bytes: Callable[[int], bytes] = os.urandom,
        history_page: int = HISTORY_PAGE,
        start_client: bool = True,
    ) -> None:
        super().__init__()
        self.client = client
        self.member = client.member
        self.header = self.member.header
        self.me: int = self.header.self_index
        self.names: list[str] = [m.name for m in self.header.members]
        self.relay = relay
        self.transport = transport
        self.clock = clock
        self.tz = tz
        self.random_bytes = random_bytes
        self.history_page = history_page
        self.start_client = start_client
        self.conversation = Conversation(self.names, self.me)
        self.panel = MemberPanel(
            self,
            self.member,
            self.names,
            self.me,
            clock,
            lambda lines: self.message_log.append(lines),
        )
        self.files = ChatFiles(
            self,
            member=self.member,
            client=client,
            names=self.names,
            me=self.me,
            clock=clock,
            random_bytes=random_bytes,
            downloads=downloads,
            panel=self.panel,
            conversation=self.conversation,
            message_log=lambda: self.message_log,
            warn=self.warn,
            notice=self.notice,
        )
        self.connected = False
        self._retry_at: float | None = None
        self._repeats = Repeats()  # a relay failing the same way each time says it once a minute
        self._pages = HistoryPages(self.member, history_page)  # older pages: before the oldest
        self._loading_older = False
        self._stopped = False
        # What went wrong while closing, when nothing is left to show it on: the
        # `chat` command prints these after the app has gone.
        self.closing_problems: list[str] = []

    # -- layout --------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        width = min(14, max(len(n) for n in self.names + ["you"]))
        yield Static(Text(self._title_text()), id="title")
        with Horizontal(id="main"):
            yield MessageLog(name_width=width, tz=self.tz, id="log")
            with VerticalScroll(id="side"):
                yield Label("Members", classes="side-title", id="members-title")
                yield MemberList(id="members")
                yield Label("Your pad", classes="side-title")
                yield PadGauge(id="pad")
                yield Label("Files", classes="side-title", id="files-title")
                yield Vertical(id="transfers")
        yield Banner(id="banner")
        yield ChatInput(id="input")
        yield StatusBar(relay=self.relay, transport=self.transport, id="status")
        yield Footer()

    def _title_text(self) -> str:
        # The group and names were typed by whoever made the kit.
        group, me = one_line(self.header.group), one_line(self.names[self.me])
        return f"GhostLine · {group} · you are {me}"

    @property
    def message_log(self) -> MessageLog:
        return self.query_one(MessageLog)

    def on_mount(self) -> None:
        self.query_one("#members-title", Label).tooltip = self.query_one(MemberList).tooltip
        self.query_one("#files-title").display = False
        # Read on the event loop: the client has not started, so nothing else holds the
        # member, and these only read.
        member = self.member
        self.conversation.start(member.first_unseen(), member.chat_seen)
        entries = self._pages.newest()
        log = self.message_log
        log.append(self.conversation.page(entries))
        log.more_above = self._pages.more
        self.call_after_refresh(log.fill)
        self.panel.failed = member.failed_verifications()
        self.panel.show_pads(member.pads())
        self.query_one(StatusBar).show("connecting")
        self.set_interval(1.0, self._tick)
        self.query_one(ChatInput).focus()
        self.run_worker(self._run(), name="events", exclusive=True)

    async def _run(self) -> None:
        # Unfinished transfers are rebuilt before any event is read, so a part arriving
        # live never meets a transfer that history has not filled in yet.
        await self.files.resume()
        if self.start_client:
            await self._pump_events()

    async def _pump_events(self) -> None:
        try:
            await self.client.start()
        except GhostlineError as err:
            self.warn(f"could not start the connection: {err}")
            return
        while True:
            event = await self.client.events.get()
            if not self.is_running:
                return  # closing: the widgets may be gone
            self.handle_event(event)

    async def action_quit(self) -> None:
        await self._stop_client()
        self.exit()

    async def _stop_client(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # What is in the history now has been seen: the next opening marks what is new.
        try:
            await asyncio.to_thread(self.member.mark_chat_seen)
        except GhostlineError as err:
            self.closing_problems.append(f"could not record what you have seen: {err}")
        if self.start_client:
            try:
                await asyncio.wait_for(self.client.stop(), STOP_TIMEOUT)
            except TimeoutError:
                self.closing_problems.append(
                    f"the connection did not close within {STOP_TIMEOUT:g} s"
                )
            except Exception as err:  # noqa: BLE001 (closing: said, never raised)
                self.closing_problems.append(f"the connection did not close cleanly: {err!r}")

    async def on_unmount(self) -> None:
        await self._stop_client()

    # -- history -------------------------------------------------------------------

    def on_message_log_need_older(self, _: MessageLog.NeedOlder) -> None:
        self._load_older()

    @work(group="history")
    async def _load_older(self) -> None:
        if self._loading_older:
            return
        self._loading_older = True
        try:
            older = await asyncio.to_thread(self._pages.older)
            if not self.is_running:
                return
            log = self.message_log
            log.more_above = self._pages.more
            log.prepend(self.conversation.page(older))
        finally:
            self._loading_older = False
        self.call_after_refresh(log.fill)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # pageup/pagedown scroll the messages only when no dialog is open; in a dialog
        # (help, pad info) they scroll the dialog.
        return not (action == "scroll_log" and len(self.screen_stack) > 1)

    def action_scroll_log(self, direction: int) -> None:
        log = self.message_log
        if direction < 0:
            if log.scroll_y <= 0:
                log.want_older()
            log.scroll_page_up(animate=False)
        else:
            log.scroll_page_down(animate=False)

    # -- client events -------------------------------------------------------------

    def handle_event(self, event: object) -> None:
        """Show one client event. Public so tests can feed events directly."""
        if isinstance(event, MessageReceived):
            self._repeats.useful()
            self._on_received(event)
        elif isinstance(event, MessageAccepted):
            self._repeats.useful()
            self.message_log.set_state(event.counter, "stored", event.seq)
            self.files.accepted(event.counter)
        elif isinstance(event, PresenceChanged):
            self.panel.presence_changed(event)
        elif isinstance(event, ConnectionChanged):
            self._on_connection(event)
        elif isinstance(event, PadLow | PadExhausted):
            self.panel.reread()
        elif isinstance(event, PadGiven):
            self._on_given(event)
        elif (said := event_sentence(event)) is not None:
            kind, text = said
            if (line := self._repeats.line(text, text)) is not None:
                self.say(kind, line)
            if isinstance(event, MessageRejected) and event.rule == Rule.BAD_TAG:
                self.panel.reread()  # its sender's failed-verification count went up

    def _on_received(self, event: MessageReceived) -> None:
        received = event.received
        obj = event.payload_obj
        line = self.conversation.line_for(
            received.sender,
            obj,
            timestamp=self.clock(),
            seq=received.seq,
            refused=received.grant_refused,
        )
        if line is not None:
            new_since = self.conversation.take_new_since_live()
            self.message_log.add_received(line, new_since=new_since)
        if isinstance(obj, FileHeader | FileChunk):
            self.files.received(received.sender, obj)
        self.panel.used(received.sender, received.counter, received.offset + received.pad_used)

    def _on_given(self, event: PadGiven) -> None:
        """This member gave pad on its own (automatic giving)."""
        grant = event.grant
        kind, text = gift_text(
            self.names, self.me, self.me, GrantPayload(*grant, int(self.clock())), None
        )
        self.say(kind, f"{text} (automatically: {self.names[grant.to]} was running low)")
        self.panel.reread()

    def _on_connection(self, event: ConnectionChanged) -> None:
        if getattr(event, "channel", "relay") == "presence":
            self.panel.presence_connection(event)
            return
        status = self.query_one(StatusBar)
        self._retry_at = None if event.retry_in is None else self.clock() + event.retry_in
        status.show(event.state, relay=event.relay, retry_in=event.retry_in, detail=event.detail)
        self.connected = event.state == "connected"
        self.message_log.mark_unstored("sending" if self.connected else "sealed")
        if event.state == "stopped" and not self._stopped and event.detail != "stopped":
            # A fatal refusal (wrong kit set, bad signature, a certificate that does not
            # match): retrying would not help.
            failure = getattr(self.client, "failure", None)
            hint = failure_hint(failure) if isinstance(failure, GhostlineError) else None
            self.warn(f"disconnected for good: {event.detail}" + (f". {hint}" if hint else ""))

    def _tick(self) -> None:
        if not self.is_running:
            return
        self.panel.presence_due()
        status = self.query_one(StatusBar)
        if status.state == "reconnecting" and self._retry_at is not None:
            status.retry_in = max(0.0, self._retry_at - self.clock())
            status.refresh_text()

    def say(self, kind: Literal["warning", "notice"], text: str) -> None:
        self.message_log.append([ChatLine(kind, self.clock(), text)])

    def warn(self, text: str) -> None:
        self.say("warning", text)

    def notice(self, text: str) -> None:
        self.say("notice", text)

    # -- input ---------------------------------------------------------------------

    async def on_chat_input_submitted(self, event: ChatInput.Submitted) -> None:
        text = event.text
        if text.startswith("/") and not text.startswith("//"):
            await self._command(text)
            return
        if text.startswith("//"):
            text = text[1:]
        await self.send_text(text)

    async def send_text(self, text: str) -> None:
        now = self.clock()
        try:
            entry = await self.client.send(encode_text(text, int(now)))
        except PadExhaustedError as err:
            self.warn(f"not sent: {err}")
            self.panel.reread()
            return
        except GhostlineError as err:
            self.warn(f"not sent: {err}")
            return
        line = ChatLine(
            "message",
            now,
            text,
            sender=self.me,
            sender_name="you",
            own=True,
            counter=entry.counter,
            state="sending" if self.connected else "sealed",
        )
        self.message_log.append([line])
        self.panel.used(self.me, entry.counter, entry.offset + entry.length)

    async def _command(self, text: str) -> None:
        name, _, arg = text.partition(" ")
        name = name.lower()
        arg = arg.strip()
        if name == "/quit":
            await self.action_quit()
        elif name == "/help":
            self.action_help()
        elif name == "/info":
            self.action_info()
        elif name == "/file":
            if not arg:
                self.warn("usage: /file PATH")
            else:
                self.files.offer(arg)
        else:
            self.warn(f"unknown command {name}: try /help (start with // to send a '/')")

    def action_help(self) -> None:
        self.push_screen(TextScreen("Help", HELP_TEXT))

    @work(group="info")
    async def action_info(self) -> None:
        # A scan of the kit's keys and a read of the state: off the event loop.
        table = await asyncio.to_thread(pad_table, self.member, self.panel.online)
        if self.is_running:
            await self.push_screen(TextScreen("Pad info", table))
