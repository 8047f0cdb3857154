"""Sending a file: hash it, seal the parts in groups, follow the relay's answers.

`prepare_file` (the chat app) and `spool_file` (the web app's uploads) hash the file and
leave it on disk: its parts are read from it a group at a time as they are sealed, in a
worker thread, and a file that changed after it was hashed is refused (`spooled`). So a
file costs about one seal group of memory, whatever its size.

`send_file` seals one FILE_HEADER and then every FILE_CHUNK through `Client.send_many`,
in groups cut by `limits.seal_groups` (at most MAX_SEAL_GROUP parts and MAX_SEAL_BYTES
of pad each): one durable commit per group, not per chunk, while a progress bar still
moves. `OutgoingFiles` maps each sealed counter to its file, so that the
relay's ACCEPTED answers drive the progress of the right file.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import UsageError
from ..protocol.payload import FileHeader
from ..state.limits import MAX_SEAL_GROUP, pad_cost, seal_groups
from .spooled import payload_sizes, read_file

# Parts sealed per commit: one fsync per group instead of one per chunk. The most one
# commit may seal, because `pad recover` skips that much (state/limits.py).
SEAL_GROUP = MAX_SEAL_GROUP


class Sender(Protocol):
    async def send_many(self, payloads: Sequence[bytes]) -> list[Any]: ...


@dataclass(slots=True)
class OutgoingFile:
    """A file ready to seal: its header, all encoded payloads, and what they cost."""

    path: Path
    header: FileHeader
    payloads: Sequence[bytes]  # `spooled.SpooledParts`, read as they are sealed (or a list)
    counters: set[int] = field(default_factory=set)
    accepted: int = 0
    step: int | None = None  # the kit's length step (format 2 pads every part)

    def pad_sizes(self) -> list[int]:
        """Pad bytes each part consumes: its length (one-time pad is 1:1), padded to the
        length step in format 2."""
        return [pad_cost(size, self.step) for size in payload_sizes(self.payloads)]

    @property
    def pad_bytes(self) -> int:
        """Pad bytes this file consumes."""
        return sum(self.pad_sizes())

    @property
    def messages(self) -> int:
        return len(self.payloads)

    @property
    def key(self) -> str:
        return "out-" + self.header.transfer_id.hex()


def prepare_file(
    path: str | os.PathLike[str],
    *,
    transfer_id: bytes,
    sent_at: int,
    name: str | None = None,
    step: int | None = None,
) -> OutgoingFile:
    """An OutgoingFile for the file at `path` (sent as `name`, default its own name;
    `step`: the kit's length step): hashed once here, its parts read from it only as
    they are sealed, and refused if it changes before then (see `spooled`). Raises
    UsageError when it is not a readable regular file, FileChanged when it changed while
    it was hashed. Blocking: it reads the whole file once, 1 MiB at a time."""
    source = Path(path)
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    try:
        parts = read_file(source, transfer_id=transfer_id, sent_at=sent_at,
                          name=source.name if name is None else name)  # fmt: skip
    except OSError as exc:
        raise UsageError(f"{source}: cannot read it ({exc.strerror})") from None
    return OutgoingFile(source, parts.header, parts, step=step)


def spool_file(
    path: str | os.PathLike[str],
    *,
    transfer_id: bytes,
    sent_at: int,
    name: str,
    step: int | None = None,
) -> OutgoingFile:
    """An OutgoingFile for the private file `path` (an upload the web app keeps until it
    is sealed), sent as `name`: as `prepare_file`, with errors that name the upload by
    `name` (its path is a temporary file's). Blocking (it reads the file once)."""
    source = Path(path)
    try:
        parts = read_file(source, transfer_id=transfer_id, sent_at=sent_at, name=name)
    except OSError as exc:
        raise UsageError(f"{name}: cannot read it ({exc.strerror})") from None
    return OutgoingFile(source, parts.header, parts, step=step)


async def send_file(
    client: Sender,
    outgoing: OutgoingFile,
    on_sealed: Callable[[list[Any]], None] | None = None,
    *,
    group: int = SEAL_GROUP,
) -> None:
    """Seal and queue every part in order, at most `group` per commit and never more
    pad than one commit may hold; `on_sealed(entries)` after each commit. Nothing of a
    group leaves before its commit (`send_many` returns after). Raises FileChanged, with
    the groups before sealed and nothing more, when a spooled file changed."""
    for cut in seal_groups(outgoing.pad_sizes(), most=group):
        # Spooled parts are read from their file a group at a time, off the event loop.
        entries = await client.send_many(
            await asyncio.to_thread(outgoing.payloads.__getitem__, cut)
        )
        outgoing.counters.update(e.counter for e in entries)
        if on_sealed is not None:
            on_sealed(entries)


class OutgoingFiles:
    """Own files being sent, by the counter of each sealed part.

    An ACCEPTED can (rarely) arrive before `send_many` has returned the entry it is
    about: such counters are kept while any file is sealing and counted when the entry
    shows up, so no file's progress stops one short.
    """

    def __init__(self) -> None:
        self._by_counter: dict[int, OutgoingFile] = {}
        self._accepted_early: set[int] = set()
        self._sealing = 0

    async def send(
        self,
        client: Sender,
        outgoing: OutgoingFile,
        on_sealed: Callable[[list[Any]], None] | None = None,
    ) -> None:
        """`send_file`, with every sealed part tracked for `accepted`."""

        def sealed(entries: list[Any]) -> None:
            for entry in entries:
                if entry.counter in self._accepted_early:
                    self._accepted_early.discard(entry.counter)
                    outgoing.accepted += 1
                else:
                    self._by_counter[entry.counter] = outgoing
            if on_sealed is not None:
                on_sealed(entries)

        self._sealing += 1
        try:
            await send_file(client, outgoing, sealed)
        finally:
            self._sealing -= 1
            if not self._sealing:
                self._accepted_early.clear()

    def accepted(self, counter: int) -> OutgoingFile | None:
        """The relay stored our message `counter`: the file it belongs to, one more part
        accepted, or None when it is not a file part (or not sealed yet)."""
        outgoing = self._by_counter.pop(counter, None)
        if outgoing is None:
            if self._sealing:
                self._accepted_early.add(counter)
            return None
        outgoing.accepted += 1
        return outgoing
