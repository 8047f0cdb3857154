"""Receiving files: reassemble the parts of each transfer, save a verified file once.

Every part goes into a `FileAssembly` (assembly.py) per (sender, transfer id); only a
complete file whose length and SHA-256 match is handed out, and `IncomingFiles.save`
(blocking: run it off the event loop or UI thread) publishes it in the downloads
folder under a new name (`publish.save_new_file`). Only once the file and its
directory entry are durable is the save recorded in the state database
(`Member.record_saved_file`), so a crash in between saves it again on the next
opening rather than losing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GhostlineError, PayloadError
from ..protocol.payload import FileChunk, FileHeader
from . import publish
from .assembly import FileAssembly
from .names import safe_file_name


@dataclass(slots=True)
class IncomingFile:
    sender: int
    sender_name: str
    assembly: FileAssembly
    saved_to: Path | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return f"in-{self.sender}-{self.assembly.transfer_id.hex()}"

    @property
    def name(self) -> str:
        header = self.assembly.header
        return safe_file_name(header.name) if header else "(file)"


@dataclass(frozen=True, slots=True)
class IncomingUpdate:
    """What one received part changed: a new transfer, progress, a verified file ready to
    save (`complete`), a saved file, a failure. `warning`: saved, but something else
    went wrong (the record of the save)."""

    transfer: IncomingFile
    is_new: bool
    saved_to: Path | None = None
    error: str | None = None
    complete: bytes | None = None
    warning: str | None = None


# Records durably that a transfer was saved at a path (`Member.record_saved_file`).
RecordSaved = Callable[[IncomingFile, Path], None]


def record_in(member: Any) -> RecordSaved:
    """A `RecordSaved` that records saves in `member`'s state database (blocking)."""

    def record(transfer: IncomingFile, path: Path) -> None:
        header = transfer.assembly.header
        assert header is not None  # only a complete, verified file is saved
        member.record_saved_file(
            transfer.sender, transfer.assembly.transfer_id, path, header.sha256
        )

    return record


class IncomingFiles:
    """Every file being received, keyed by (sender, transfer id)."""

    def __init__(self, downloads: Callable[[], Path], record: RecordSaved | None = None) -> None:
        self._downloads = downloads
        self._record = record
        self.transfers: dict[tuple[int, bytes], IncomingFile] = {}

    def add(
        self, sender: int, sender_name: str, part: FileHeader | FileChunk, *, replay: bool = False
    ) -> IncomingUpdate:
        """Feed one part. When it completes a file whose length and SHA-256 match, the
        update's `complete` holds the bytes: hand them to `save` (it blocks: run it off
        the UI thread). With `replay=True` (parts from history) a completed file is not
        handed out again: it was saved when it first arrived. (A complete transfer in
        history that was never saved is replayed with `replay=False`.)"""
        key = (sender, part.transfer_id)
        transfer = self.transfers.get(key)
        is_new = transfer is None
        if transfer is None:
            transfer = IncomingFile(sender, sender_name, FileAssembly(part.transfer_id))
            self.transfers[key] = transfer
        if transfer.error is not None:
            return IncomingUpdate(transfer, is_new)
        try:
            data = transfer.assembly.add(part)
        except PayloadError as exc:
            transfer.error = str(exc)
            return IncomingUpdate(transfer, is_new, error=transfer.error)
        if data is None or replay:
            return IncomingUpdate(transfer, is_new)
        return IncomingUpdate(transfer, is_new, complete=data)

    def save(self, transfer: IncomingFile, data: bytes) -> IncomingUpdate:
        """Write a verified file to the downloads folder under a new name, then record
        that it was saved (only then: a crash before leaves it to be saved on the next
        opening, never lost). Blocking."""
        try:
            transfer.saved_to = publish.save_new_file(self._downloads(), transfer.name, data)
        except OSError as exc:
            transfer.error = f"could not save {transfer.name}: {exc.strerror or exc}"
            return IncomingUpdate(transfer, False, error=transfer.error)
        warning = None
        if self._record is not None:
            try:
                self._record(transfer, transfer.saved_to)
            except GhostlineError as exc:
                warning = (
                    f"saved {transfer.name} to {transfer.saved_to}, but could not record "
                    f"that it was saved ({exc}): it may be saved again as a copy"
                )
        return IncomingUpdate(transfer, False, saved_to=transfer.saved_to, warning=warning)

    def supersede(self, sender: int, sha256: bytes) -> list[IncomingFile]:
        """Drop (and return) unfinished transfers from `sender` of a file with this
        SHA-256: the same bytes came through whole in another transfer."""
        gone = [
            t
            for t in self.unfinished()
            if t.sender == sender
            and t.assembly.header is not None
            and t.assembly.header.sha256 == sha256
        ]
        for t in gone:
            del self.transfers[(t.sender, t.assembly.transfer_id)]
        return gone

    def unfinished(self) -> list[IncomingFile]:
        return [t for t in self.transfers.values() if not t.assembly.done and t.error is None]
