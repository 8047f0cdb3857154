"""Files in the chat: split and send, reassemble and save. Uses payload's file kinds.

Sending seals one FILE_HEADER and then every FILE_CHUNK through `Client.send_many`, in
groups of SEAL_GROUP: one durable commit per group, not per chunk, while the progress
bar still moves; the relay's ACCEPTED answers drive it. Receiving feeds every part into
a `payload.FileAssembly` per (sender, transfer id); only a complete file whose length
and SHA-256 match is written (by `IncomingFiles.save`, which the app runs off its UI
thread), to a temporary file first and then linked under a name that does not exist
yet ("name (1).ext"), so nothing is ever overwritten or half-saved. Only once the file
and its directory entry are durable is the save recorded in the state database
(`Member.record_saved_file`).

On opening, `scan_file_history` looks through the whole history (not just the page on
screen) for transfers that did not finish: incoming ones resume when the rest arrives,
and own ones are reported as unfinished. It also finds incoming transfers that are
complete but were never recorded as saved (the app was stopped between receiving the
last part and saving the file): the app saves those then.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import GhostlineError, PayloadError, UsageError
from ..fsutil import fsync_dir
from ..member import MAX_SEAL_GROUP
from ..payload import (
    FILE_CHUNK_HEAD_LEN,
    FileAssembly,
    FileChunk,
    FileHeader,
    Kind,
    chunk_head,
    decode,
    safe_file_name,
    split_file,
)

# Parts sealed per commit: one fsync per group instead of one per chunk, yet a 64 KiB
# chunk size keeps a group near 2 MiB in memory and the progress bar moving. The most
# one commit may seal, because `pad recover` skips that much (member.MAX_SEAL_GROUP).
SEAL_GROUP = MAX_SEAL_GROUP


class Sender(Protocol):
    async def send_many(self, payloads: Sequence[bytes]) -> list[Any]: ...


@dataclass(slots=True)
class OutgoingFile:
    """A file ready to seal: its header, all encoded payloads, and what they cost."""

    path: Path
    header: FileHeader
    payloads: list[bytes]
    counters: set[int] = field(default_factory=set)
    accepted: int = 0

    @property
    def pad_bytes(self) -> int:
        """Pad bytes this file consumes: every payload's length (one-time pad is 1:1)."""
        return sum(len(p) for p in self.payloads)

    @property
    def messages(self) -> int:
        return len(self.payloads)

    @property
    def key(self) -> str:
        return "out-" + self.header.transfer_id.hex()


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


def prepare_file(path: str | os.PathLike[str], *, transfer_id: bytes, sent_at: int) -> OutgoingFile:
    """Read and split `path`. Raises UsageError when it is not a readable regular file."""
    source = typed_path(os.fspath(path))
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    try:
        header, chunks = split_file(source, transfer_id=transfer_id, sent_at=sent_at)
        payloads = [header.encode(), *(c.encode() for c in chunks)]
    except OSError as exc:
        raise UsageError(f"{source}: cannot read it ({exc.strerror})") from None
    if len(payloads) - 1 != header.chunk_count:
        raise UsageError(f"{source}: the file changed while it was being read")
    return OutgoingFile(source, header, payloads)


async def send_file(
    client: Sender,
    outgoing: OutgoingFile,
    on_sealed: Callable[[list[Any]], None] | None = None,
    *,
    group: int = SEAL_GROUP,
) -> None:
    """Seal and queue every part in order, `group` per commit; `on_sealed(entries)` after
    each commit. Nothing of a group leaves before its commit (`send_many` returns after)."""
    for start in range(0, outgoing.messages, group):
        entries = await client.send_many(outgoing.payloads[start : start + group])
        outgoing.counters.update(e.counter for e in entries)
        if on_sealed is not None:
            on_sealed(entries)


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
        return header.safe_name if header else "(file)"


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
            transfer.saved_to = save_new_file(self._downloads(), transfer.name, data)
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


@dataclass(frozen=True, slots=True)
class UnfinishedSend:
    """An own file whose header was sealed but not all of its chunks."""

    header: FileHeader
    counter: int  # the header's counter
    chunks_sealed: int
    sent_again: bool = False  # the same bytes went through whole in a later transfer


@dataclass(frozen=True, slots=True)
class FileHistory:
    """What the whole history says about file transfers (see `scan_file_history`)."""

    # every stored part of unfinished incoming transfers and of `unsaved`, oldest first
    incoming: list[Any]
    unfinished_sends: list[UnfinishedSend]
    complete: frozenset[tuple[int, bytes]]  # (sender, transfer id) of finished transfers
    # (sender, transfer id) of complete incoming transfers never recorded as saved
    unsaved: frozenset[tuple[int, bytes]] = frozenset()


def scan_file_history(member: Any, me: int) -> FileHistory:
    """Find unfinished transfers in the whole history. Blocking (a scan of the history
    table): run it off the UI thread.

    Reads every FILE_HEADER and only the first bytes of every FILE_CHUNK, so finished
    files are never read again; then the full parts of unfinished incoming transfers,
    to resume them, and of finished incoming ones that `member.saved_files()` has no
    record of, to save them. A transfer is finished when its header and all its chunks
    are there. A finished transfer recorded entirely before saves were tracked (an
    upgraded database) counts as saved: schema 1 saved on arrival and kept no record.
    """
    saves = member.saved_files()
    headers: dict[tuple[int, bytes], tuple[FileHeader, int]] = {}
    indexes: dict[tuple[int, bytes], set[int]] = {}
    parts: dict[tuple[int, bytes], list[tuple[int, int]]] = {}
    tracked: set[tuple[int, bytes]] = set()  # some part recorded after saves were tracked
    for entry in member.history_of_kind(Kind.FILE_HEADER):
        try:
            header = decode(entry.payload)
        except PayloadError:
            continue
        if not isinstance(header, FileHeader):
            continue
        key = (entry.sender, header.transfer_id)
        headers.setdefault(key, (header, entry.counter))
        parts.setdefault(key, []).append((entry.sender, entry.counter))
        if _tracked(entry, saves.untracked_until):
            tracked.add(key)
    for entry in member.history_of_kind(Kind.FILE_CHUNK, head=FILE_CHUNK_HEAD_LEN):
        try:
            transfer_id, index = chunk_head(entry.payload)
        except PayloadError:
            continue
        key = (entry.sender, transfer_id)
        indexes.setdefault(key, set()).add(index)
        parts.setdefault(key, []).append((entry.sender, entry.counter))
        if _tracked(entry, saves.untracked_until):
            tracked.add(key)
    complete: set[tuple[int, bytes]] = set()
    # (sender, SHA-256) -> counter of the latest finished transfer of those bytes
    finished_later: dict[tuple[int, bytes], int] = {}
    sealed: dict[tuple[int, bytes], int] = {}
    for key, (header, counter) in headers.items():
        sealed[key] = sum(1 for i in indexes.get(key, ()) if i < header.chunk_count)
        if sealed[key] >= header.chunk_count:
            complete.add(key)
            ident = (key[0], header.sha256)
            finished_later[ident] = max(counter, finished_later.get(ident, -1))
    unfinished_sends: list[UnfinishedSend] = []
    resume: list[tuple[int, int]] = []
    unsaved: set[tuple[int, bytes]] = set()
    for key, keys in parts.items():
        if key in complete:
            if key[0] != me and key in tracked and key not in saves.records:
                unsaved.add(key)
                resume.extend(keys)
            continue
        found = headers.get(key)
        sent_again = (
            found is not None and finished_later.get((key[0], found[0].sha256), -1) > found[1]
        )
        if key[0] != me:
            if not sent_again:  # else nothing is left to wait for
                resume.extend(keys)
        elif found is not None:
            unfinished_sends.append(UnfinishedSend(found[0], found[1], sealed[key], sent_again))
    incoming = member.history_of(resume) if resume else []
    return FileHistory(incoming, unfinished_sends, frozenset(complete), frozenset(unsaved))


def _tracked(entry: Any, untracked_until: int) -> bool:
    """Whether `entry` was recorded after saved files were tracked."""
    return entry.history_id is None or entry.history_id > untracked_until


def candidate_names(name: str) -> list[str]:
    """`name`, then `stem (1).ext`, `stem (2).ext`, … (a long but finite list)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    return [name] + [f"{stem} ({i}){suffix}" for i in range(1, 1000)]


def save_new_file(directory: Path, name: str, data: bytes) -> Path:
    """Write `data` into `directory` under `name`, or the first free "name (k).ext".

    The bytes go to a temporary file that is fsynced, then hard-linked to the final
    name (which fails rather than replacing an existing file); a half-written file never
    carries the final name. The directory is fsynced before returning, so the returned
    name is durable (and may be recorded as saved).
    """
    name = safe_file_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".ghostline-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        target = _link_free_name(tmp, directory, name)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fsync_dir(directory)
    except OSError:
        target.unlink(missing_ok=True)  # not known to be durable: not saved
        raise
    return target


def _link_free_name(source: Path, directory: Path, name: str) -> Path:
    for candidate in candidate_names(name):
        target = directory / candidate
        try:
            _link_exclusive(source, target)
        except FileExistsError:
            continue
        return target
    raise FileExistsError(f"too many files named like {name} in {directory}")


def _link_exclusive(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (some network or FAT file systems): claim the name with
        # O_EXCL, then move the complete file over our own empty placeholder.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.replace(source, target)
