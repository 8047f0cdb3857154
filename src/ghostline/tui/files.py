"""Files in the chat: split and send, reassemble and save. Uses payload's file kinds.

Sending seals one FILE_HEADER and then every FILE_CHUNK through `Client.send`; the
relay's ACCEPTED answers drive the progress bar. Receiving feeds every part into a
`payload.FileAssembly` per (sender, transfer id); only a complete file whose length and
SHA-256 match is written, to a temporary file first and then linked under a name that
does not exist yet ("name (1).ext"), so nothing is ever overwritten or half-saved.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import PayloadError, UsageError
from ..payload import FileAssembly, FileChunk, FileHeader, safe_file_name, split_file


class Sender(Protocol):
    async def send(self, payload: bytes) -> Any: ...


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


def prepare_file(path: str | os.PathLike[str], *, transfer_id: bytes, sent_at: int) -> OutgoingFile:
    """Read and split `path`. Raises UsageError when it is not a readable regular file."""
    source = Path(path).expanduser()
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
    on_sealed: Callable[[int, int], None] | None = None,
) -> None:
    """Seal and queue every part in order; `on_sealed(done, total)` after each one."""
    total = outgoing.messages
    for done, payload in enumerate(outgoing.payloads, start=1):
        entry = await client.send(payload)
        outgoing.counters.add(entry.counter)
        if on_sealed is not None:
            on_sealed(done, total)


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
    """What one received part changed: a new transfer, progress, a saved file, a failure."""

    transfer: IncomingFile
    is_new: bool
    saved_to: Path | None = None
    error: str | None = None


class IncomingFiles:
    """Every file being received, keyed by (sender, transfer id)."""

    def __init__(self, downloads: Callable[[], Path]) -> None:
        self._downloads = downloads
        self.transfers: dict[tuple[int, bytes], IncomingFile] = {}

    def add(
        self, sender: int, sender_name: str, part: FileHeader | FileChunk, *, save: bool = True
    ) -> IncomingUpdate:
        """Feed one part. With `save=False` (history replay) a completed file is not
        written again: it was saved when it first arrived."""
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
        if data is None or not save:
            return IncomingUpdate(transfer, is_new)
        try:
            transfer.saved_to = save_new_file(self._downloads(), transfer.name, data)
        except OSError as exc:
            transfer.error = f"could not save {transfer.name}: {exc.strerror or exc}"
            return IncomingUpdate(transfer, is_new, error=transfer.error)
        return IncomingUpdate(transfer, is_new, saved_to=transfer.saved_to)

    def unfinished(self) -> list[IncomingFile]:
        return [t for t in self.transfers.values() if not t.assembly.done and t.error is None]


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
    carries the final name.
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
        for candidate in candidate_names(name):
            target = directory / candidate
            try:
                _link_exclusive(tmp, target)
            except FileExistsError:
                continue
            return target
        raise FileExistsError(f"too many files named like {name} in {directory}")
    finally:
        tmp.unlink(missing_ok=True)


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
