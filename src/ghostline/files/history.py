"""What the whole history says about file transfers that did not finish.

On opening, `scan_file_history` looks through the whole history (not just the page on
screen) for transfers that did not finish: incoming ones resume when the rest arrives
(`replay_incoming` feeds their parts back into `IncomingFiles`), and own ones are
reported as unfinished. It also finds incoming transfers that are complete but were
never recorded as saved (the app was stopped between receiving the last part and
saving the file): `replay_incoming` hands those out to be saved then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import PayloadError
from ..protocol.payload import FILE_CHUNK_HEAD_LEN, FileChunk, FileHeader, Kind, chunk_head, decode
from .incoming import IncomingFiles, IncomingUpdate


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


def replay_incoming(
    found: FileHistory, incoming: IncomingFiles, names: list[str]
) -> list[IncomingUpdate]:
    """Feed the stored parts of `found` into `incoming`, oldest first. Returns the
    updates whose `complete` bytes must be saved now (complete, never saved). A failed
    check is not returned: it was reported when the last part first arrived."""
    to_save: list[IncomingUpdate] = []
    for entry in found.incoming:
        try:
            part = decode(entry.payload)
        except PayloadError:
            continue
        if not isinstance(part, FileHeader | FileChunk):
            continue
        unsaved = (entry.sender, part.transfer_id) in found.unsaved
        update = incoming.add(entry.sender, names[entry.sender], part, replay=not unsaved)
        if update.complete is not None:
            to_save.append(update)
    return to_save
