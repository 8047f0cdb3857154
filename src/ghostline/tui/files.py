"""What the terminal adds to file transfer (the rest is `ghostline.files`): reading a
path as a person typed, pasted or dropped it, and `ChatFiles`, the chat app's file
transfers: resuming them from history, offering and sending own files, showing and
saving incoming ones, each with its row in the side panel. Blocking work (reading,
scanning history, saving) runs in worker threads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.css.query import NoMatches

from ..errors import FileChanged, GhostlineError
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
from ..protocol.payload import FileChunk, FileHeader
from ..units import format_size
from ..wording.padleft import pad_summary, percent
from .conversation import Conversation
from .members import MemberPanel
from .messagelog import MessageLog
from .screens import ConfirmScreen
from .widgets import TransferRow


def typed_path(text: str) -> Path:
    """The path a person typed or dropped into the terminal: as is when that exists,
    else without surrounding quotes and with `\\ ` read as a space (how terminals
    paste a dragged file)."""
    raw = Path(text).expanduser()
    if raw.exists() or len(text) < 2:
        return raw
    if text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return Path(text.replace("\\ ", " ")).expanduser()


class ChatFiles:
    """The file transfers of one chat app (`app.files`). It shows rows in the side
    panel, lines through `conversation` and `message_log`, pad costs through `panel`,
    and what goes wrong through `warn` and `notice`."""

    def __init__(
        self,
        app: App[Any],
        *,
        member: Any,
        client: Any,
        names: list[str],
        me: int,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
        downloads: Callable[[], Path],
        panel: MemberPanel,
        conversation: Conversation,
        message_log: Callable[[], MessageLog],
        warn: Callable[[str], None],
        notice: Callable[[str], None],
    ) -> None:
        self.app = app
        self.member = member
        self.client = client
        self.names = names
        self.me = me
        self.clock = clock
        self.random_bytes = random_bytes
        self.panel = panel
        self.conversation = conversation
        self.message_log = message_log
        self.warn = warn
        self.notice = notice
        self.incoming = IncomingFiles(downloads, record=record_in(member))
        self.outgoing = OutgoingFiles()
        # transfer id -> own file not all sent (shared with the conversation)
        self.unfinished_sends: dict[bytes, UnfinishedSend] = conversation.unfinished_sends
        self.ready = False  # the history scan for unfinished transfers is done
        self.log: list[tuple[str, int, int]] = []  # (key, done, total), for tests

    # -- on opening ------------------------------------------------------------------

    async def resume(self) -> None:
        """Rebuild unfinished transfers from the whole history (off the UI thread), and
        save complete ones that were never saved (the app stopped before it could)."""
        app = self.app
        try:
            found: FileHistory = await asyncio.to_thread(scan_file_history, self.member, self.me)
        except GhostlineError as err:
            self.warn(f"could not look for unfinished file transfers: {err}")
            self.ready = True
            return
        if not app.is_running:
            return
        for update in replay_incoming(found, self.incoming, self.names):
            self.show_incoming(update)
        for transfer in self.incoming.unfinished():
            if transfer.assembly.header is not None:
                row = self._row(
                    transfer.key, _incoming_title(transfer), transfer.assembly.header.total_size
                )
                row.advance_to(
                    transfer.assembly.received,
                    "interrupted: the rest will be saved when it arrives",
                )
        for send in found.unfinished_sends:
            header = send.header
            self.unfinished_sends[header.transfer_id] = send
            # Its "stored ✓" would be the header's alone: say nothing rather than that.
            text = self.conversation.own_file_text(header)
            self.message_log().set_text(send.counter, text, show_state=False)
            if send.sent_again:
                continue
            self.warn(
                f"file {safe_file_name(header.name)}: sent {send.chunks_sealed} of "
                f"{header.chunk_count} parts before the app closed; send it again with /file"
            )
        self.ready = True

    # -- own files ---------------------------------------------------------------------

    def offer(self, path: str) -> None:
        """Prepare `path`, show its pad cost, and send it if the user agrees (a worker:
        the question waits for an answer)."""
        self.app.run_worker(self._offer(path), group="files", exclusive=False)

    async def _offer(self, path: str) -> None:
        app = self.app
        try:
            outgoing = await asyncio.to_thread(
                prepare_file,
                typed_path(path),
                transfer_id=self.random_bytes(8),
                sent_at=int(self.clock()),
                step=self.member.header.length_step,
            )
        except FileChanged as err:
            self.warn(f"/file: {err} (while it was being read); nothing was sent")
            return
        except GhostlineError as err:
            self.warn(f"/file: {err}")
            return
        if not app.is_running:
            return
        own = self.panel.pads[self.me]
        name = safe_file_name(outgoing.header.name)
        size = format_size(outgoing.header.total_size)
        if outgoing.pad_bytes > own.bytes_left or outgoing.messages > own.msgs_left:
            self.warn(
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
        if not await app.push_screen_wait(ConfirmScreen(question)):
            self.notice(f"did not send {name}")
            return
        await self.send(outgoing)

    async def send(self, outgoing: OutgoingFile) -> None:
        app = self.app
        name = safe_file_name(outgoing.header.name)
        size = format_size(outgoing.header.total_size)
        total = outgoing.messages
        row = self._row(outgoing.key, f"→ {name} ({size})", total)
        row.advance_to(0, f"sealing 0/{total}")
        sealed = 0

        def on_sealed(entries: list[Any]) -> None:
            nonlocal sealed
            sealed += len(entries)
            if not app.is_running:
                return
            last = entries[-1]
            self.panel.used(self.me, last.counter, last.offset + last.length)
            row.advance_to(outgoing.accepted, f"sealed {sealed}/{total}")

        try:
            await self.outgoing.send(self.client, outgoing, on_sealed)
        except FileChanged as err:
            if not app.is_running:
                return
            row.finish("stopped: the file changed", ok=False)
            self.warn(f"/file {name}: {_changed_text(err, outgoing, sealed)}")
            self.panel.reread()
            return
        except GhostlineError as err:
            if not app.is_running:
                return
            row.finish(f"stopped: {err}", ok=False)
            self.warn(f"/file {name}: stopped after {sealed} of {total} parts: {err}")
            self.panel.reread()
            return
        if not app.is_running:
            return
        # The line follows the last part: "stored ✓" once the whole file is at the relay.
        last = max(outgoing.counters)
        line = self.conversation.line_for(
            self.me, outgoing.header, timestamp=self.clock(), counter=last
        )
        if line is not None:
            self.message_log().append([line])
        self._progress(outgoing)

    def accepted(self, counter: int) -> None:
        """The relay stored own message `counter`: one more part of a file, perhaps."""
        outgoing = self.outgoing.accepted(counter)
        if outgoing is not None:
            self._progress(outgoing)

    def _progress(self, outgoing: OutgoingFile) -> None:
        total = outgoing.messages
        self.log.append((outgoing.key, outgoing.accepted, total))
        try:
            row = self.app.query_one(f"#{outgoing.key}", TransferRow)
        except NoMatches:
            return
        if outgoing.accepted >= total:
            row.finish("stored at the relay ✓", ok=True)
        else:
            row.advance_to(outgoing.accepted, f"stored {outgoing.accepted}/{total}")

    # -- incoming files ----------------------------------------------------------------

    def received(self, sender: int, part: FileHeader | FileChunk) -> None:
        """A part of `sender`'s file arrived live."""
        self.show_incoming(self.incoming.add(sender, self.names[sender], part))

    def show_incoming(self, update: IncomingUpdate) -> None:
        transfer = update.transfer
        assembly = transfer.assembly
        total = assembly.total or 0
        self.log.append((transfer.key, assembly.received, total))
        if assembly.header is None:
            return  # a chunk before its header: shown once the header says what it is
        row = self._row(transfer.key, _incoming_title(transfer), assembly.header.total_size)
        if update.error:
            self._show_result(update, row)
        elif update.complete is not None:
            row.advance_to(assembly.received, "complete and verified; saving…")
            self.app.run_worker(self._save(transfer, update.complete, row), group="save")
        else:
            row.advance_to(
                assembly.received,
                f"{format_size(assembly.received)} of {format_size(total)}",
            )

    async def _save(self, transfer: IncomingFile, data: bytes, row: TransferRow) -> None:
        """Write a verified file (and fsync it) off the UI thread, then say where."""
        update = await asyncio.to_thread(self.incoming.save, transfer, data)
        if not self.app.is_running:
            return  # saved all the same; nothing left to show it on
        self._show_result(update, row)

    def _show_result(self, update: IncomingUpdate, row: TransferRow) -> None:
        transfer = update.transfer
        if update.error:
            row.finish(f"failed: {update.error}", ok=False)
            self.warn(f"file {transfer.name} from {transfer.sender_name}: {update.error}")
        elif update.saved_to is not None:
            row.finish(f"saved as {update.saved_to.name}", ok=True)
            self.notice(f"saved {transfer.name} from {transfer.sender_name} to {update.saved_to}")
            if update.warning:
                self.warn(update.warning)
            self._close_superseded(transfer)

    def _close_superseded(self, saved: IncomingFile) -> None:
        """An unfinished earlier transfer of the same bytes from the same sender has
        just arrived whole (sent again): its row need not wait any longer."""
        header = saved.assembly.header
        if header is None:
            return
        for transfer in self.incoming.supersede(saved.sender, header.sha256):
            with contextlib.suppress(NoMatches):  # no row: nothing to close
                row = self.app.query_one(f"#{transfer.key}", TransferRow)
                row.finish("sent again in full: saved from that copy", ok=True)

    def _row(self, key: str, title: str, total: int) -> TransferRow:
        app = self.app
        app.query_one("#files-title").display = True
        with contextlib.suppress(NoMatches):  # the row exists already
            return app.query_one(f"#{key}", TransferRow)
        row = TransferRow(title, total, id=key)
        app.query_one("#transfers").mount(row)
        return row


def _changed_text(err: FileChanged, outgoing: OutgoingFile, sealed: int) -> str:
    """What a file that changed while it was being sent (after `sealed` parts) means."""
    if not sealed:
        return f"{err}; nothing of it was sent and no pad was used. Send it again with /file."
    spent = format_size(sum(outgoing.pad_sizes()[:sealed]))
    return (
        f"{err}, so nothing more of it was sent. The {sealed} of {outgoing.messages} parts "
        f"sent before used {spent} of your pad, which is spent; receivers never get the "
        "rest, so they cannot save the file (never a mix of two versions). Send it again "
        "with /file."
    )


def _incoming_title(transfer: Any) -> str:
    header = transfer.assembly.header
    size = f" ({format_size(header.total_size)})" if header else ""
    return f"← {transfer.sender_name}: {transfer.name}{size}"
