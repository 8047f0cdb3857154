"""Retention in the SQLite store: a room's oldest messages go, by count and bytes within
an append (`trim`), by age on the sweeper's clock (`expire`). Chunks go with their index
rows in `senders`. Each runs inside its caller's transaction, under the write lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from . import chunks
from .chunks import SEQ_BITS
from .config import Retention
from .sqlite_schema import BIAS, CHUNK_COLUMNS, INSERT_SENDER, RoomState, load_room

_DELETE_SENDER = "DELETE FROM senders WHERE room = ? AND sender = ? AND hi = ?"


def trim(db: sqlite3.Connection, state: RoomState, keep: Retention) -> None:
    """Drop the oldest messages of a room until it is within the count and byte limits."""
    base = state.id << SEQ_BITS
    while state.count > keep.max_messages or state.size > keep.max_bytes:
        row = db.execute(
            f"SELECT {CHUNK_COLUMNS}, stored_at, data FROM chunks"
            " WHERE key > ? AND key < ? ORDER BY key LIMIT 1",
            (base, base + (1 << SEQ_BITS)),
        ).fetchone()
        if row is None:
            break
        key, first, sizes_blob, ss, cs, sums, crc, _, data = row
        sizes = chunks.checked_sizes(key, first, sizes_blob, ss, cs, sums, crc, len(data))
        if sizes is None:  # damaged: it goes whole, and the room is counted again
            delete_chunks(db, state, key)
            fresh = load_room(db, state.id, state.head)
            state.count, state.size = fresh.count, fresh.size
            continue
        dropped = freed = 0
        count, size = state.count, state.size
        for length in sizes:
            if count <= keep.max_messages and size <= keep.max_bytes:
                break
            count -= 1
            size -= length
            dropped += 1
            freed += length
        if dropped == len(sizes):
            delete_chunks(db, state, key)
        else:
            _unindex(db, state.id, chunks.unpack("H", ss), chunks.unpack("Q", cs))
            row = chunks.cut(row, dropped, freed)
            db.execute(
                "UPDATE chunks SET first = ?, sizes = ?, senders = ?, counters = ?,"
                " sums = ?, crc = ?, data = ? WHERE key = ?",
                (*row[1:7], row[8], key),
            )
            ss, cs = chunks.unpack("H", row[3]), chunks.unpack("Q", row[4])
            db.executemany(
                INSERT_SENDER,
                [
                    (state.id, s, hi - BIAS, lo - BIAS, key)
                    for s, (lo, hi) in chunks.ranges(ss, cs).items()
                ],
            )
        state.count, state.size = count, size


def expire(db: sqlite3.Connection, states: Sequence[RoomState], cutoff: float) -> int:
    """Delete the chunks committed before `cutoff` of each room; how many messages went.
    Each room's count and size move on (the caller restores them if it rolls back)."""
    # No index on stored_at (it would cost every insert): within a room stored_at grows
    # with seq, so walk each room from its oldest chunk and stop early. All the messages
    # of a chunk were committed together, so chunks go whole.
    removed = 0
    for state in states:
        if state.count == 0:
            continue
        base = state.id << SEQ_BITS
        last, messages, freed = 0, 0, 0
        cur = db.execute(
            "SELECT key, LENGTH(sizes) / 4, stored_at, LENGTH(data) FROM chunks"
            " WHERE key > ? AND key < ? ORDER BY key",
            (base, base + (1 << SEQ_BITS)),
        )
        for key, count, stored_at, size in cur:
            if stored_at >= cutoff:
                break
            last = key
            messages += count
            freed += size
        cur.close()
        if not last:
            continue
        delete_chunks(db, state, last)
        removed += messages
        state.count -= messages
        state.size -= freed
    return removed


def delete_chunks(db: sqlite3.Connection, state: RoomState, upto: int) -> None:
    """Delete the room's chunks with key <= upto, and their `senders` rows."""
    base = state.id << SEQ_BITS
    for key, ss, cs in db.execute(
        "SELECT key, senders, counters FROM chunks WHERE key > ? AND key <= ?", (base, upto)
    ).fetchall():
        if len(ss) * 4 == len(cs):
            _unindex(db, state.id, chunks.unpack("H", ss), chunks.unpack("Q", cs))
        else:  # damaged: find its index rows the slow way
            db.execute("DELETE FROM senders WHERE room = ? AND chunk = ?", (state.id, key))
    db.execute("DELETE FROM chunks WHERE key > ? AND key <= ?", (base, upto))


def _unindex(
    db: sqlite3.Connection, room_id: int, senders: Sequence[int], counters: Sequence[int]
) -> None:
    db.executemany(
        _DELETE_SENDER,
        [(room_id, s, hi - BIAS) for s, (_, hi) in chunks.ranges(senders, counters).items()],
    )
