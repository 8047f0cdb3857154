"""The SQLite store's append path: a batch of publishes checked against what each room
holds (exact dedupe), given seqs, and packed into chunk rows with their index rows.

It runs on the event loop, with the store's write lock held: plain C calls into SQLite,
no thread hand-off per row; only the COMMIT, the fsync, runs on the writer thread
(`commit`), without the GIL. Duplicates are found without a per-message index: each
room's state keeps the highest counter each sender ever had stored, a counter above it
is new without a look-up (senders count up), and any other is looked up exactly, in the
batch itself and then in `senders` (the range of each sender's counters per chunk).
`senders` is read from a file: a sender whose highest stored counter there is not a
counter (a damaged row) is logged as `store_damaged` and all its counters are looked up.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate, groupby, islice, repeat
from operator import itemgetter, lt

from ..errors import StateError
from . import chunks
from .backend import Appended, Publish
from .chunks import SEQ_BITS
from .config import Retention
from .logfmt import log_event
from .sqlite_retention import trim
from .sqlite_schema import BIAS, CHUNK_COLUMNS, INSERT_SENDER, RoomState, Saved

# An `Appended` made without the Python-level __new__ namedtuple() gives it (once per
# message, on the hot path).
_new_appended = tuple.__new__
# an Appended (seq, False, ()) per new message of a run, in C-level maps
_APPENDED, _NEW, _ALONE = repeat(Appended), repeat(False), repeat(())
_room_sender, _counter, _sealed = itemgetter(0, 1), itemgetter(2), itemgetter(3)
_CHUNK_BYTES = 256 * 1024  # a room's share of one commit is split into chunks of about this
_INSERT_CHUNK = "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPDATE_HEAD = "UPDATE rooms SET head = ? WHERE id = ?"
# The top of a sender whose stored top is damaged: above every u64 counter, so each of
# its counters is looked up (and never taken as new unseen); only ever raised, it stays.
_UNKNOWN_TOP = 2 * BIAS
log = logging.getLogger("ghostline.relay")

# A room's share of the batch: its state, then the new messages' sealed bytes, senders
# and counters, and each sender's lowest and highest counter among them.
_NewMessages = tuple[RoomState, list[bytes], list[int], list[int], dict[int, tuple[int, int]]]
_IndexRow = tuple[int, int, int, int, int]  # a row of `senders`


def insert(
    db: sqlite3.Connection,
    rooms: dict[bytes, RoomState],
    retention: Retention,
    batch: Sequence[Publish],
    saved: Saved,
) -> tuple[list[Appended], int]:
    """BEGIN and insert `batch`; the caller commits (`commit`). One `Appended` per
    publish, and the bytes of sealed messages newly stored. Each room's state moves on
    at once; `saved` gets it as it was, for `sqlite_schema.restore` if the commit fails."""
    db.execute("BEGIN IMMEDIATE")
    with _rolled_back_on_error(db):
        return _insert_rows(db, rooms, retention, batch, saved)


def commit(db: sqlite3.Connection) -> None:
    """COMMIT what `insert` began (on the writer thread), or roll back and raise."""
    with _rolled_back_on_error(db):
        db.execute("COMMIT")


@contextmanager
def _rolled_back_on_error(db: sqlite3.Connection) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _insert_rows(
    db: sqlite3.Connection,
    rooms: dict[bytes, RoomState],
    retention: Retention,
    batch: Sequence[Publish],
    saved: Saved,
) -> tuple[list[Appended], int]:
    results: list[Appended] = []
    add = results.append
    # per room: its state, then the new messages' sealed bytes, senders, counters
    new: dict[bytes, _NewMessages] = {}
    last: bytes | None = None  # the room of the previous message (runs share it)
    entry: _NewMessages
    state: RoomState
    top: dict[int, int]
    room_sealed: list[bytes]
    room_senders: list[int]
    room_counters: list[int]
    room_ranges: dict[int, tuple[int, int]]
    # The hot path: once per run of one sender's messages (a connection's publishes
    # arrive together). A run whose counters rise and start above every counter the
    # sender has stored is all new: its seqs are given without a Python step per
    # message; any other run is checked message by message.
    for (room, sender), group in groupby(batch, _room_sender):
        run = list(group)
        if room is not last:
            seen = new.get(room)
            if seen is None:
                found = rooms.get(room)
                if found is None:
                    raise StateError("publish to a room with no bound roster")
                saved.append((found, found.head, found.count, found.size))
                seen = new[room] = (found, [], [], [], {})
            entry = seen
            state, room_sealed, room_senders, room_counters, room_ranges = entry
            top = state.top
            last = room
        high = top.get(sender)
        if high is None:
            high = top[sender] = _load_top(db, state, room, sender)
        counters = list(map(_counter, run))
        if counters[0] > high and all(map(lt, counters, islice(counters, 1, None))):
            first = state.head + 1
            state.head += len(run)
            top[sender] = counters[-1]
            room_sealed += map(_sealed, run)
            room_senders += repeat(sender, len(run))
            room_counters += counters
            # above all this sender had: its lowest stays, the run's last is its highest
            known = room_ranges.get(sender)
            room_ranges[sender] = (counters[0] if known is None else known[0], counters[-1])
            seqs = range(first, state.head + 1)
            results += map(_new_appended, _APPENDED, zip(seqs, _NEW, _ALONE, strict=False))
            continue
        for counter, sealed in zip(counters, map(_sealed, run), strict=True):
            if counter <= high:  # not above every stored counter: look it up, exactly
                seq = _pending(entry, sender, counter)
                if seq is None:
                    seq = _lookup(db, state, sender, counter)
                if seq is not None:
                    add(_new_appended(Appended, (seq, True, ())))
                    continue
            else:
                high = top[sender] = counter
            seq = state.head = state.head + 1
            room_sealed.append(sealed)
            room_senders.append(sender)
            room_counters.append(counter)
            known = room_ranges.get(sender)
            room_ranges[sender] = (
                (counter, counter)
                if known is None
                else (min(known[0], counter), max(known[1], counter))
            )
            add(_new_appended(Appended, (seq, False, ())))
    rows, index, heads, stored = _rows(new.values())
    if rows:
        db.executemany(_INSERT_CHUNK, rows)
        db.executemany(INSERT_SENDER, index)
        db.executemany(_UPDATE_HEAD, heads)
        for state, messages, *_ in new.values():
            if messages and (
                state.count > retention.max_messages or state.size > retention.max_bytes
            ):
                trim(db, state, retention)
    return results, stored


def _rows(
    new: Iterable[_NewMessages],
) -> tuple[list[chunks.ChunkRow], list[_IndexRow], list[tuple[int, int]], int]:
    """The chunk rows, index rows and new heads of each room's new messages, and their
    bytes; each room's count and size move on."""
    now = time.time()
    rows: list[chunks.ChunkRow] = []
    index: list[_IndexRow] = []
    heads: list[tuple[int, int]] = []
    stored = 0
    for state, messages, senders, counters, room_ranges in new:
        if not messages:
            continue
        heads.append((state.head, state.id))
        first = state.head - len(messages) + 1
        ends = list(accumulate(map(len, messages)))  # where each message ends
        start = 0
        while start < len(messages):  # chunks of about _CHUNK_BYTES
            before = ends[start - 1] if start else 0
            # through the message that brings the chunk to _CHUNK_BYTES, or the last
            end = min(bisect_left(ends, before + _CHUNK_BYTES, start) + 1, len(messages))
            total = ends[end - 1] - before
            part = messages[start:end] if start or end < len(messages) else messages
            ss, cs = senders[start:end], counters[start:end]
            key = (state.id << SEQ_BITS) | (first + end - 1)
            rows.append(chunks.build(key, first + start, part, ss, cs, now))
            # the room's messages in one chunk (the common case): their ranges are known
            whole = part is messages
            for s, (lo, hi) in (room_ranges if whole else chunks.ranges(ss, cs)).items():
                index.append((state.id, s, hi - BIAS, lo - BIAS, key))
            state.count += end - start
            state.size += total
            stored += total
            start = end
    return rows, index, heads, stored


def _load_top(db: sqlite3.Connection, state: RoomState, room: bytes, sender: int) -> int:
    """The highest counter `sender` has stored in the room, -1 if none, or
    `_UNKNOWN_TOP` if the index holds no counter there (damaged: logged, and the chunks
    of its rows whose `hi` is no integer kept in `state.unindexed`)."""
    (hi,) = db.execute(
        "SELECT MAX(hi) FROM senders WHERE room = ? AND sender = ?", (state.id, sender)
    ).fetchone()
    if hi is None:
        return -1
    if isinstance(hi, int) and -BIAS <= hi < BIAS:  # a u64 counter, as the append wrote it
        return hi + BIAS
    # Text or a blob sorts above every integer, so MAX finds it; a real is found only
    # when it is the highest (docs/SECURITY.md says what goes unnoticed). A look-up by
    # range may miss such a row's chunk: found once here, each look-up reads it too.
    state.unindexed[sender] = tuple(
        chunk
        for (chunk,) in db.execute(
            "SELECT chunk FROM senders WHERE room = ? AND sender = ? AND typeof(hi) <> 'integer'",
            (state.id, sender),
        )
    )
    log_event(
        log, "store_damaged", level=logging.ERROR, room=room.hex(), sender=sender,
        action="each counter looked up (index out of range)",
    )  # fmt: skip
    return _UNKNOWN_TOP


def _lookup(db: sqlite3.Connection, state: RoomState, sender: int, counter: int) -> int | None:
    """The seq of the stored message (sender, counter) of a room, or None.
    A damaged chunk is not trusted: what it may hold counts as not held."""
    biased = counter - BIAS
    found = db.execute(
        "SELECT chunk FROM senders WHERE room = ? AND sender = ? AND hi >= ? AND lo <= ?",
        (state.id, sender, biased, biased),
    ).fetchall()
    for chunk in dict.fromkeys([*(c for (c,) in found), *state.unindexed.get(sender, ())]):
        row = db.execute(
            f"SELECT {CHUNK_COLUMNS}, LENGTH(data) FROM chunks WHERE key = ?", (chunk,)
        ).fetchone()
        if row is None or chunks.checked_sizes(*row) is None:
            continue
        _, first, _, ss, cs, _, _, _ = row
        for i, (s, c) in enumerate(zip(chunks.unpack("H", ss), chunks.unpack("Q", cs))):  # noqa: B905
            if s == sender and c == counter:
                return int(first) + i
    return None


def _pending(entry: _NewMessages, sender: int, counter: int) -> int | None:
    """The seq given to (sender, counter) earlier in the batch being inserted, or None."""
    state, _, senders, counters, _ = entry
    for i in range(len(senders)):
        if counters[i] == counter and senders[i] == sender:
            return state.head - len(senders) + 1 + i
    return None
