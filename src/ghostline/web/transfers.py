"""File transfers on the page: the rows with their progress, the offers a person
confirms before a file is sealed, and the saved files the page may download.

A file to send arrives as an upload streamed into a private temporary folder (mode
0700, the file 0600), is hashed there (`files.spooled`, in a worker thread) and stays
there, not in memory, while the page shows what it costs from the pad and waits for
the person to confirm; its parts are read from it as they are sealed. It is deleted
when the offer is cancelled or refused, once it is sealed (or sealing stops), and with
the whole folder when the server stops; the folder of a process that was killed is
removed by the next `ghostline web` to start (`spool`). At most MAX_OFFERS wait at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from ..display import one_line
from ..errors import GhostlineError
from ..files import (
    IncomingFile,
    IncomingFiles,
    IncomingUpdate,
    OutgoingFile,
    OutgoingFiles,
    UnfinishedSend,
    replay_incoming,
    safe_file_name,
    scan_file_history,
)
from ..files.outgoing import spool_file
from ..state.usage import PadLeft
from ..units import format_size
from ..wording.padleft import pad_summary, percent
from .spool import Spool

log = logging.getLogger("ghostline.web")

SAVED_LISTED = 200  # received files of earlier runs listed on the page
MAX_OFFERS = 4  # files uploaded and waiting to be confirmed, each up to 1 GiB on disk


class Host(Protocol):
    """What the transfers use of the web session (`session.WebSession`)."""

    client: Any
    member: Any
    me: int
    names: list[str]
    pads: dict[int, PadLeft]
    incoming: IncomingFiles
    outgoing: OutgoingFiles
    unfinished_sends: dict[bytes, UnfinishedSend]
    files_ready: bool
    clock: Callable[[], float]
    random_bytes: Callable[[int], bytes]

    def broadcast(self, message: dict[str, Any]) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...
    def warn(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def show_saved(self, update: IncomingUpdate) -> None: ...
    def used(self, sender: int, counter: int, end: int) -> None: ...
    async def reread_pads(self) -> None: ...
    def unstored(self) -> Any: ...
    def line_for(
        self, sender: int, counter: int, obj: Any, timestamp: float, state: Any = None
    ) -> dict[str, Any] | None: ...
    def add_line(self, item: dict[str, Any]) -> None: ...


class Transfers:
    def __init__(self, session: Host) -> None:
        self.session = session
        self._rows: dict[str, dict[str, Any]] = {}
        self.saved: dict[str, Path] = {}  # row key -> file the page may download
        self.offers: dict[str, OutgoingFile] = {}
        # Mode 0700; removes the spools of killed processes first (`spool`).
        self._spool = Spool.create()

    # -- rows ------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows.values())

    def _row(self, key: str, **fields: Any) -> None:
        row = self._rows.setdefault(
            key, {"type": "transfer", "key": key, "title": "", "done": 0, "total": 1,
                  "status": "", "ok": None, "download": None}
        )  # fmt: skip
        row.update(fields)
        self.session.broadcast(row)

    def _incoming_title(self, transfer: IncomingFile) -> str:
        header = transfer.assembly.header
        size = f" ({format_size(header.total_size)})" if header else ""
        return f"from {transfer.sender_name}: {transfer.name}{size}"

    # -- incoming --------------------------------------------------------------------

    def incoming_update(self, update: IncomingUpdate) -> None:
        transfer = update.transfer
        assembly = transfer.assembly
        if assembly.header is None:
            return  # a chunk before its header: shown once the header says what it is
        title = self._incoming_title(transfer)
        total = assembly.header.total_size or 1
        if update.error:
            self._row(transfer.key, title=title, total=total, status=f"failed: {update.error}",
                      ok=False)  # fmt: skip
            self.session.show_saved(update)
        elif update.complete is not None:
            self._row(transfer.key, title=title, total=total, done=total,
                      status="complete and verified; saving…")  # fmt: skip
            self.session.spawn(self._save(transfer, update.complete))
        else:
            self._row(
                transfer.key, title=title, total=total, done=assembly.received,
                status=f"{format_size(assembly.received)} of {format_size(total)}",
            )  # fmt: skip

    def interrupted(self, transfer: IncomingFile) -> None:
        header = transfer.assembly.header
        if header is None:
            return
        self._row(
            transfer.key, title=self._incoming_title(transfer), total=header.total_size or 1,
            done=transfer.assembly.received,
            status="interrupted: the rest will be saved when it arrives",
        )  # fmt: skip

    async def _save(self, transfer: IncomingFile, data: bytes) -> None:
        update = await asyncio.to_thread(self.session.incoming.save, transfer, data)
        if update.saved_to is not None:
            self.saved[transfer.key] = update.saved_to
            self._row(transfer.key, status=f"saved as {one_line(update.saved_to.name)}",
                      ok=True, download=transfer.key)  # fmt: skip
            self._close_superseded(transfer)
        elif update.error:
            self._row(transfer.key, status=f"failed: {update.error}", ok=False)
        self.session.show_saved(update)

    def _close_superseded(self, saved: IncomingFile) -> None:
        header = saved.assembly.header
        if header is None:
            return
        for transfer in self.session.incoming.supersede(saved.sender, header.sha256):
            if transfer.key in self._rows:
                self._row(transfer.key, status="sent again in full: saved from that copy", ok=True)

    async def load_saved(self) -> None:
        """List files saved in earlier runs that are still there, newest last."""
        session = self.session
        records = await asyncio.to_thread(session.member.saved_files)

        def existing() -> list[tuple[str, int, Path]]:
            items = list(records.records.items())[-SAVED_LISTED:]
            return [
                (f"in-{sender}-{tid.hex()}", sender, path)
                for (sender, tid), path in items
                if path.is_file()
            ]

        for key, sender, path in await asyncio.to_thread(existing):
            if key in self._rows or not 0 <= sender < len(session.names):
                continue
            self.saved[key] = path
            name = one_line(path.name)
            self._rows[key] = {
                "type": "transfer", "key": key, "title": f"from {session.names[sender]}: {name}",
                "done": 1, "total": 1, "status": f"saved as {name}", "ok": True, "download": key,
            }  # fmt: skip

    # -- after a restart -----------------------------------------------------------

    async def resume(self) -> None:
        """Rebuild unfinished transfers from the whole history, save complete ones that
        were never saved, and say which own files were not sent in full."""
        session = self.session
        try:
            found = await asyncio.to_thread(scan_file_history, session.member, session.me)
        except GhostlineError as err:
            session.warn(f"could not look for unfinished file transfers: {err}")
            session.files_ready = True
            return
        for update in replay_incoming(found, session.incoming, session.names):
            self.incoming_update(update)
        for transfer in session.incoming.unfinished():
            self.interrupted(transfer)
        for send in found.unfinished_sends:
            header = send.header
            session.unfinished_sends[header.transfer_id] = send
            if not send.sent_again:
                session.warn(
                    f"file {safe_file_name(header.name)}: sent {send.chunks_sealed} of "
                    f"{header.chunk_count} parts before the app closed; send it again"
                )
        session.files_ready = True

    # -- outgoing --------------------------------------------------------------------

    def new_upload(self) -> Path:
        """A new, empty, private file (mode 0600) for an upload (the caller writes it).
        Raises ValueError, with what to do, when MAX_OFFERS are waiting already."""
        if len(self.offers) >= MAX_OFFERS:
            raise ValueError(
                f"{MAX_OFFERS} files are waiting for you to send or cancel them: do that first"
            )
        fd, name = tempfile.mkstemp(dir=self._spool.path, prefix="upload-")
        os.close(fd)
        return Path(name)

    async def offer(self, upload: Path, name: str) -> dict[str, Any]:
        """Say what the uploaded file would cost; it waits, on disk, for `send` or
        `cancel` (deleted at once if it cannot be sent)."""
        session = self.session
        try:
            outgoing = await asyncio.to_thread(
                spool_file, upload, transfer_id=session.random_bytes(8),
                sent_at=int(session.clock()), name=name,
                step=session.member.header.length_step,
            )  # fmt: skip
        except BaseException:
            upload.unlink(missing_ok=True)
            raise
        own = session.pads[session.me]
        header = outgoing.header
        offer: dict[str, Any] = {
            "type": "offer",
            "id": header.transfer_id.hex(),
            "name": one_line(safe_file_name(header.name)),
            "size": format_size(header.total_size),
            "cost": format_size(outgoing.pad_bytes),
            "messages": outgoing.messages,
        }
        if outgoing.pad_bytes > own.bytes_left or outgoing.messages > own.msgs_left:
            upload.unlink(missing_ok=True)
            offer["refused"] = (
                f"{offer['name']} ({offer['size']}) needs {offer['cost']} of pad in "
                f"{outgoing.messages} messages; you have {pad_summary(own)} left."
            )
            return offer
        after = own.after(outgoing.pad_bytes, outgoing.messages)
        offer["after"] = f"{pad_summary(after)} ({percent(after.fraction_left)})"
        self.offers[offer["id"]] = outgoing
        return offer

    def cancel(self, offer_id: str) -> None:
        outgoing = self.offers.pop(offer_id, None)
        if outgoing is not None:
            outgoing.path.unlink(missing_ok=True)
            self.session.notice(f"did not send {safe_file_name(outgoing.header.name)}")

    async def send(self, offer_id: str) -> None:
        """Seal and send a confirmed offer, with its progress on the page."""
        outgoing = self.offers.pop(offer_id, None)
        if outgoing is None:
            return  # sent or cancelled from another tab
        session = self.session
        header = outgoing.header
        name = one_line(safe_file_name(header.name))
        total = outgoing.messages
        self._row(outgoing.key, title=f"to the group: {name} ({format_size(header.total_size)})",
                  total=total, done=0, status=f"sealing 0/{total}")  # fmt: skip
        sealed = 0

        def on_sealed(entries: list[Any]) -> None:
            nonlocal sealed
            sealed += len(entries)
            last = entries[-1]
            session.used(session.me, last.counter, last.offset + last.length)
            self._row(outgoing.key, done=outgoing.accepted, status=f"sealed {sealed}/{total}")

        try:
            await session.outgoing.send(session.client, outgoing, on_sealed)
        except GhostlineError as err:
            self._row(outgoing.key, status=f"stopped: {err}", ok=False)
            session.warn(f"file {name}: stopped after {sealed} of {total} parts: {err}")
            await session.reread_pads()
            return
        finally:
            # Sealed (or stopped): its parts are in the outbox now, the upload goes.
            outgoing.path.unlink(missing_ok=True)
        # The line follows the last part: "stored" once the whole file is at the relay.
        last = max(outgoing.counters)
        item = session.line_for(session.me, last, header, session.clock(), session.unstored())
        if item is not None:
            session.add_line(item)
        self.outgoing_progress(outgoing)

    def outgoing_progress(self, outgoing: OutgoingFile) -> None:
        total = outgoing.messages
        if outgoing.key not in self._rows:
            return
        if outgoing.accepted >= total:
            self._row(outgoing.key, done=total, status="stored at the relay ✓", ok=True)
        else:
            self._row(outgoing.key, done=outgoing.accepted,
                      status=f"stored {outgoing.accepted}/{total}")  # fmt: skip

    def discard_offers(self) -> None:
        self.offers.clear()
        self._spool.close()
