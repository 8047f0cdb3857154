"""The chat app: renders what the client reports and hands what you type to the client.

It owns no protocol logic. Sealing, sending, resuming and reconnecting are the
`Client`'s; reading history and usage is the `Member`'s. The app keeps only what it
shows: which line is which of your messages, which file transfer is which row.

A fake client with the same `events` queue and `send` coroutine drives it in tests;
`clock` and `tz` make its times deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import Footer, Label, Static

from .. import paths
from ..cli.relaystatus import (
    failure_hint,
    messages_missing_line,
    relay_failing_line,
    store_changed_line,
)
from ..client import (
    ConnectionChanged,
    MessageAccepted,
    MessageReceived,
    MessageRejected,
    MessagesMissing,
    PadExhausted,
    PadLow,
    PresenceChanged,
    RelayError,
    RelayFailing,
    StoreChanged,
)
from ..display import one_line
from ..errors import GhostlineError, PadExhaustedError, PayloadError
from ..files import (
    FileHistory,
    IncomingFile,
    IncomingFiles,
    IncomingUpdate,
    OutgoingFile,
    OutgoingFiles,
    UnfinishedSend,
    prepare_file,
    record_in,
    replay_incoming,
    safe_file_name,
    scan_file_history,
)
from ..historypages import HistoryPages
from ..protocol.payload import FileChunk, FileHeader, Payload, TextPayload, decode, encode_text
from ..state.padlevel import PadLeft
from ..units import format_size
from .files import typed_path
from .screens import HELP_TEXT, ConfirmScreen, TextScreen
from .usage import after_message, pad_table, read_pads
from .view import (
    file_text,
    pad_summary,
    pad_warning,
    percent,
    refused_text,
    rejected_text,
)
from .widgets import (
    Banner,
    ChatInput,
    ChatLine,
    MemberList,
    MemberRow,
    MessageLog,
    PadGauge,
    StatusBar,
    TransferRow,
)

# Each message is a widget (about 3 ms to mount): one screenful and some, so the app
# opens in well under a second; older pages load when you scroll to the top.
HISTORY_PAGE = 60


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
        self.online: frozenset[int] = frozenset()
        self.connected = False
        self.pads: dict[int, PadLeft] = {}
        self.incoming = IncomingFiles(downloads, record=record_in(self.member))
        self.outgoing = OutgoingFiles()
        self.unfinished_sends: dict[bytes, UnfinishedSend] = {}  # transfer id -> what
        self.files_ready = False  # the history scan for unfinished transfers is done
        self.presence_down = False
        self._presence_resync = False
        self.transfer_log: list[tuple[str, int, int]] = []  # (key, done, total), for tests
        self._pages = HistoryPages(self.member, history_page)  # older pages: before the oldest
        self._loading_older = False
        # Where "new since you left" goes: the history id of the first message received
        # since the app last closed; None once placed, or if there is none.
        self._unseen: int | None = None
        self._new_since_live = False
        self._stopped = False

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

    def on_mount(self) -> None:
        self.query_one("#members-title", Label).tooltip = self.query_one(MemberList).tooltip
        self.query_one("#files-title").display = False
        unseen = self.member.first_unseen()
        self._unseen = unseen
        # Nothing new in the history yet: what is new arrives as the client catches up,
        # and the first message received is the first since the app last closed.
        self._new_since_live = unseen is None and self.member.chat_seen is not None
        self._load_history()
        self._refresh_pads(read_pads(self.member))
        self.query_one(StatusBar).show("connecting")
        self.set_interval(1.0, self._tick)
        self.query_one(ChatInput).focus()
        self.run_worker(self._run(), name="events", exclusive=True)

    async def _run(self) -> None:
        # Unfinished transfers are rebuilt before any event is read, so a part arriving
        # live never meets a transfer that history has not filled in yet.
        await self._resume_files()
        if self.start_client:
            await self._pump_events()

    async def _pump_events(self) -> None:
        try:
            await self.client.start()
        except GhostlineError as err:
            self._warn(f"could not start the connection: {err}")
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
        with contextlib.suppress(GhostlineError):
            self.member.mark_chat_seen()
        if self.start_client:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.stop(), 5.0)

    async def on_unmount(self) -> None:
        await self._stop_client()

    # -- history -------------------------------------------------------------------

    def _load_history(self) -> None:
        entries = self._pages.newest()
        log = self.query_one(MessageLog)
        log.append(self._history_lines(entries))
        log.more_above = self._pages.more
        self.call_after_refresh(log.fill)

    async def _resume_files(self) -> None:
        """Rebuild unfinished transfers from the whole history (off the UI thread), and
        save complete ones that were never saved (the app stopped before it could)."""
        try:
            found: FileHistory = await asyncio.to_thread(scan_file_history, self.member, self.me)
        except GhostlineError as err:
            self._warn(f"could not look for unfinished file transfers: {err}")
            self.files_ready = True
            return
        if not self.is_running:
            return
        for update in replay_incoming(found, self.incoming, self.names):
            self._show_incoming(update)
        for transfer in self.incoming.unfinished():
            if transfer.assembly.header is not None:
                row = self._transfer_row(
                    transfer.key,
                    self._incoming_title(transfer),
                    transfer.assembly.header.total_size,
                )
                row.advance_to(
                    transfer.assembly.received,
                    "interrupted: the rest will be saved when it arrives",
                )
        log = self.query_one(MessageLog)
        for send in found.unfinished_sends:
            header = send.header
            self.unfinished_sends[header.transfer_id] = send
            # Its "stored ✓" would be the header's alone: say nothing rather than that.
            log.set_text(send.counter, self._own_file_text(header), show_state=False)
            if send.sent_again:
                continue
            self._warn(
                f"file {safe_file_name(header.name)}: sent {send.chunks_sealed} of "
                f"{header.chunk_count} parts before the app closed; send it again with /file"
            )
        self.files_ready = True

    def _own_file_text(self, header: FileHeader) -> str:
        send = self.unfinished_sends.get(header.transfer_id)
        unfinished = None if send is None else (send.chunks_sealed, send.sent_again)
        return file_text(header, own=True, unfinished=unfinished)

    def _history_lines(self, entries: Sequence[Any]) -> list[ChatLine]:
        """The lines of a page of history (in relay order), with "new since you left"
        before the first message received since the app last closed, if it is here."""
        lines: list[ChatLine] = []
        due = False  # the first unseen entry was on this page: the marker is due
        for entry in entries:
            if self._unseen is not None and entry.history_id == self._unseen:
                due, self._unseen = True, None
            line = self._history_line(entry)
            if line is None:
                continue  # a file part: a marker due here goes before the next line
            if due:
                lines.append(ChatLine("new", line.timestamp, ""))
                due = False
            lines.append(line)
        if due and lines:
            lines.append(ChatLine("new", lines[-1].timestamp, ""))  # just below this page
        return lines

    def _history_line(self, entry: Any) -> ChatLine | None:
        own = entry.sender == self.me
        try:
            obj: Payload | None = decode(entry.payload)
        except PayloadError:
            obj = None
        return self._line_for(
            entry.sender,
            obj,
            timestamp=entry.recorded_at,
            counter=entry.counter if own else None,
            state="stored" if entry.state == "stored" else "sealed",
            seq=entry.seq,
        )

    def _line_for(
        self,
        sender: int,
        obj: Payload | None,
        *,
        timestamp: float,
        counter: int | None = None,
        state: str = "sealed",
        seq: int | None = None,
    ) -> ChatLine | None:
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
        if isinstance(obj, TextPayload):
            text = obj.text
        elif own:
            text = self._own_file_text(obj)
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
            log = self.query_one(MessageLog)
            log.more_above = self._pages.more
            log.prepend(self._history_lines(older))
        finally:
            self._loading_older = False
        self.call_after_refresh(log.fill)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # pageup/pagedown scroll the messages only when no dialog is open; in a dialog
        # (help, pad info) they scroll the dialog.
        return not (action == "scroll_log" and len(self.screen_stack) > 1)

    def action_scroll_log(self, direction: int) -> None:
        log = self.query_one(MessageLog)
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
            self._on_received(event)
        elif isinstance(event, MessageAccepted):
            self._on_accepted(event)
        elif isinstance(event, MessageRejected):
            self._warn(rejected_text(event.seq, event.rule, event.reason))
        elif isinstance(event, PresenceChanged):
            self._on_presence(event)
        elif isinstance(event, ConnectionChanged):
            self._on_connection(event)
        elif isinstance(event, PadLow | PadExhausted):
            self._refresh_pads(read_pads(self.member))
        elif isinstance(event, RelayError):
            self._warn(refused_text(event.reason, event.code))
        elif isinstance(event, StoreChanged):
            self._notice(store_changed_line(event))
        elif isinstance(event, MessagesMissing):
            self._warn(messages_missing_line(event))
        elif isinstance(event, RelayFailing):
            self._warn(relay_failing_line(event))

    def _on_received(self, event: MessageReceived) -> None:
        received = event.received
        obj = event.payload_obj
        line = self._line_for(received.sender, obj, timestamp=self.clock(), seq=received.seq)
        if line is not None:
            self.query_one(MessageLog).add_received(line, new_since=self._new_since_live)
            self._new_since_live = False
        if isinstance(obj, FileHeader | FileChunk):
            update = self.incoming.add(received.sender, self.names[received.sender], obj)
            self._show_incoming(update)
        self._used(received.sender, received.counter, received.offset + len(received.payload))

    def _on_accepted(self, event: MessageAccepted) -> None:
        log = self.query_one(MessageLog)
        log.set_state(event.counter, "stored", event.seq)
        outgoing = self.outgoing.accepted(event.counter)
        if outgoing is not None:
            self._outgoing_progress(outgoing)

    def _on_presence(self, event: PresenceChanged) -> None:
        self.online = event.online
        quiet = self.presence_down or self._presence_resync
        self._presence_resync = False
        if quiet:
            # Presence dropped (nobody is known to be online) or has just come back
            # (everyone it lists "joins"): neither is someone coming or going.
            self._refresh_members()
            return
        log = self.query_one(MessageLog)
        now = self.clock()
        notes = [
            ChatLine("notice", now, f"{self.names[i]} came online")
            for i in sorted(event.joined)
            if i != self.me and i < len(self.names)
        ] + [
            ChatLine("notice", now, f"{self.names[i]} went offline")
            for i in sorted(event.left)
            if i != self.me and i < len(self.names)
        ]
        log.append(notes)
        self._refresh_members()

    def _on_connection(self, event: ConnectionChanged) -> None:
        status = self.query_one(StatusBar)
        if getattr(event, "channel", "relay") == "presence":
            down = event.retry_in is not None
            # The first list after (re)connecting says who is online already; nobody
            # in it has just arrived.
            self._presence_resync = not down
            self.presence_down = down
            status.show_presence(None if not down else event.detail)
            self._refresh_members()
            return
        retry_at = None if event.retry_in is None else self.clock() + event.retry_in
        self._retry_at = retry_at
        status.show(event.state, relay=event.relay, retry_in=event.retry_in, detail=event.detail)
        self.connected = event.state == "connected"
        self.query_one(MessageLog).mark_unstored("sending" if self.connected else "sealed")
        if event.state == "stopped" and not self._stopped and event.detail != "stopped":
            # A fatal refusal (wrong kit set, bad signature, a certificate that does not
            # match): retrying would not help.
            failure = getattr(self.client, "failure", None)
            hint = failure_hint(failure) if isinstance(failure, GhostlineError) else None
            self._warn(f"disconnected for good: {event.detail}" + (f". {hint}" if hint else ""))

    _retry_at: float | None = None

    def _tick(self) -> None:
        if not self.is_running:
            return
        status = self.query_one(StatusBar)
        if status.state == "reconnecting" and self._retry_at is not None:
            status.retry_in = max(0.0, self._retry_at - self.clock())
            status.refresh_text()

    def _warn(self, text: str) -> None:
        self.query_one(MessageLog).append([ChatLine("warning", self.clock(), text)])

    def _notice(self, text: str) -> None:
        self.query_one(MessageLog).append([ChatLine("notice", self.clock(), text)])

    # -- pad -----------------------------------------------------------------------

    def _used(self, sender: int, counter: int, end: int) -> None:
        """A message of `sender` used key `counter` and pad up to `end`."""
        pads = dict(self.pads)
        pads[sender] = after_message(pads[sender], counter=counter, end=end)
        self._refresh_pads(pads)

    def _refresh_pads(self, pads: dict[int, PadLeft]) -> None:
        self.pads = pads
        own = self.pads[self.me]
        self.query_one(PadGauge).show(own)
        banner = self.query_one(Banner)
        banner.show(pad_warning(own), own.level)
        chat_input = self.query_one(ChatInput)
        exhausted = own.level == "exhausted"
        if exhausted != chat_input.disabled:
            chat_input.disabled = exhausted
            if exhausted:
                chat_input.load_text("")
                chat_input.border_title = "pad used up: sending is disabled"
            else:
                chat_input.border_title = None
        self._refresh_members()

    def _refresh_members(self) -> None:
        rows = [
            MemberRow(i, name, i in self.online, self.pads.get(i), i == self.me)
            for i, name in enumerate(self.names)
        ]
        self.query_one(MemberList).show(rows, presence_known=not self.presence_down)

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
            self._warn(f"not sent: {err}")
            self._refresh_pads(read_pads(self.member))
            return
        except GhostlineError as err:
            self._warn(f"not sent: {err}")
            return
        self.query_one(MessageLog).append(
            [
                ChatLine(
                    "message",
                    now,
                    text,
                    sender=self.me,
                    sender_name="you",
                    own=True,
                    counter=entry.counter,
                    state="sending" if self.connected else "sealed",
                )
            ]
        )
        self._used(self.me, entry.counter, entry.offset + entry.length)

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
                self._warn("usage: /file PATH")
            else:
                self.offer_file(arg)
        else:
            self._warn(f"unknown command {name}: try /help (start with // to send a '/')")

    def action_help(self) -> None:
        self.push_screen(TextScreen("Help", HELP_TEXT))

    def action_info(self) -> None:
        table: Table = pad_table(self.member, self.online)
        self.push_screen(TextScreen("Pad info", table))

    # -- files ---------------------------------------------------------------------

    @work(exclusive=False, group="files")
    async def offer_file(self, path: str) -> None:
        """Prepare `path`, show its pad cost, and send it if the user agrees."""
        try:
            outgoing = await asyncio.to_thread(
                prepare_file,
                typed_path(path),
                transfer_id=self.random_bytes(8),
                sent_at=int(self.clock()),
            )
        except GhostlineError as err:
            self._warn(f"/file: {err}")
            return
        if not self.is_running:
            return
        own = self.pads[self.me]
        name = safe_file_name(outgoing.header.name)
        size = format_size(outgoing.header.total_size)
        if outgoing.pad_bytes > own.bytes_left or outgoing.messages > own.msgs_left:
            self._warn(
                f"/file: {name} ({size}) needs {format_size(outgoing.pad_bytes)} of pad in "
                f"{outgoing.messages} messages; you have {pad_summary(own)} left."
            )
            return
        after = own.after(outgoing.pad_bytes, outgoing.messages)
        question = (
            f"Send {name} ({size}) to the group?\n\n"
            f"It uses {format_size(outgoing.pad_bytes)} of your pad in "
            f"{outgoing.messages} messages.\n"
            f"Left afterwards: {pad_summary(after)} ({percent(after.fraction_left)})."
        )
        if not await self.push_screen_wait(ConfirmScreen(question)):
            self._notice(f"did not send {name}")
            return
        await self.send_file(outgoing)

    async def send_file(self, outgoing: OutgoingFile) -> None:
        name = safe_file_name(outgoing.header.name)
        size = format_size(outgoing.header.total_size)
        total = outgoing.messages
        row = self._transfer_row(outgoing.key, f"→ {name} ({size})", total)
        row.advance_to(0, f"sealing 0/{total}")
        sealed = 0

        def on_sealed(entries: list[Any]) -> None:
            nonlocal sealed
            sealed += len(entries)
            if not self.is_running:
                return
            last = entries[-1]
            self._used(self.me, last.counter, last.offset + last.length)
            row.advance_to(outgoing.accepted, f"sealed {sealed}/{total}")

        try:
            await self.outgoing.send(self.client, outgoing, on_sealed)
        except GhostlineError as err:
            if not self.is_running:
                return
            row.finish(f"stopped: {err}", ok=False)
            self._warn(f"/file {name}: stopped after {sealed} of {total} parts: {err}")
            self._refresh_pads(read_pads(self.member))
            return
        if not self.is_running:
            return
        # The line follows the last part: "stored ✓" once the whole file is at the relay.
        last = max(outgoing.counters)
        line = self._line_for(self.me, outgoing.header, timestamp=self.clock(), counter=last)
        if line is not None:
            self.query_one(MessageLog).append([line])
        self._outgoing_progress(outgoing)

    def _outgoing_progress(self, outgoing: OutgoingFile) -> None:
        total = outgoing.messages
        self.transfer_log.append((outgoing.key, outgoing.accepted, total))
        try:
            row = self.query_one(f"#{outgoing.key}", TransferRow)
        except NoMatches:
            return
        if outgoing.accepted >= total:
            row.finish("stored at the relay ✓", ok=True)
        else:
            row.advance_to(outgoing.accepted, f"stored {outgoing.accepted}/{total}")

    def _incoming_title(self, transfer: Any) -> str:
        header = transfer.assembly.header
        size = f" ({format_size(header.total_size)})" if header else ""
        return f"← {transfer.sender_name}: {transfer.name}{size}"

    def _transfer_row(self, key: str, title: str, total: int) -> TransferRow:
        self.query_one("#files-title").display = True
        with contextlib.suppress(NoMatches):
            return self.query_one(f"#{key}", TransferRow)
        row = TransferRow(title, total, id=key)
        self.query_one("#transfers").mount(row)
        return row

    def _show_incoming(self, update: IncomingUpdate) -> None:
        transfer = update.transfer
        assembly = transfer.assembly
        total = assembly.total or 0
        self.transfer_log.append((transfer.key, assembly.received, total))
        if assembly.header is None:
            return  # a chunk before its header: shown once the header says what it is
        row = self._transfer_row(
            transfer.key, self._incoming_title(transfer), assembly.header.total_size
        )
        if update.error:
            self._show_result(update, row)
        elif update.complete is not None:
            row.advance_to(assembly.received, "complete and verified; saving…")
            self._save_file(transfer, update.complete, row)
        else:
            row.advance_to(
                assembly.received,
                f"{format_size(assembly.received)} of {format_size(total)}",
            )

    @work(group="save")
    async def _save_file(self, transfer: IncomingFile, data: bytes, row: TransferRow) -> None:
        """Write a verified file (and fsync it) off the UI thread, then say where."""
        update = await asyncio.to_thread(self.incoming.save, transfer, data)
        if not self.is_running:
            return  # saved all the same; nothing left to show it on
        self._show_result(update, row)

    def _show_result(self, update: IncomingUpdate, row: TransferRow) -> None:
        transfer = update.transfer
        if update.error:
            row.finish(f"failed: {update.error}", ok=False)
            self._warn(f"file {transfer.name} from {transfer.sender_name}: {update.error}")
        elif update.saved_to is not None:
            row.finish(f"saved as {update.saved_to.name}", ok=True)
            self._notice(f"saved {transfer.name} from {transfer.sender_name} to {update.saved_to}")
            if update.warning:
                self._warn(update.warning)
            self._close_superseded(transfer)

    def _close_superseded(self, saved: IncomingFile) -> None:
        """An unfinished earlier transfer of the same bytes from the same sender has
        just arrived whole (sent again): its row need not wait any longer."""
        header = saved.assembly.header
        if header is None:
            return
        for transfer in self.incoming.supersede(saved.sender, header.sha256):
            with contextlib.suppress(NoMatches):
                row = self.query_one(f"#{transfer.key}", TransferRow)
                row.finish("sent again in full: saved from that copy", ok=True)
