"""Reading a room back from the SQLite store, for a member who resumes: its messages
after a seq, each checked against its checksum first.

A message whose checksum fails is never served: its seq is skipped, and the log says
once which seqs of which room were dropped (docs/DEPLOYMENT.md). Runs on the reader
thread, on its own connection, so a member catching up never delays a commit.
"""

from __future__ import annotations

import logging
import sqlite3

from . import chunks
from .backend import StoredMessage
from .chunks import SEQ_BITS, SEQ_MASK
from .logfmt import log_event
from .sqlite_schema import CHUNK_COLUMNS

log = logging.getLogger("ghostline.relay")


class DamageLog:
    """Logs the seqs of each room found damaged, each once (reader thread only)."""

    def __init__(self) -> None:
        self._reported: dict[bytes, set[int]] = {}  # room -> damaged seqs already logged

    def report(self, room: bytes, damaged: list[tuple[int, int]]) -> None:
        seen = self._reported.setdefault(room, set())
        # a range's last seq names it: a damaged chunk's first seq depends on the read
        fresh = [(lo, hi) for lo, hi in damaged if hi not in seen]
        if not fresh:
            return
        seen.update(hi for _, hi in fresh)
        seqs = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in fresh)
        log_event(
            log, "store_damaged", level=logging.ERROR, room=room.hex(), seqs=seqs,
            action="not served (checksum mismatch)",
        )  # fmt: skip


def read_after(
    db: sqlite3.Connection,
    room_id: int,
    after: int,
    limit: int,
    max_bytes: int,
    damaged: list[tuple[int, int]],
) -> list[StoredMessage]:
    """The intact messages of room `room_id` with seq > after, oldest first, at most
    `limit` of them and stopping once `max_bytes` are reached. The seq ranges skipped
    as damaged on the way go to `damaged` (even if the read then fails)."""
    base = room_id << SEQ_BITS
    out: list[StoredMessage] = []
    total = 0
    last = after
    cur = db.execute(
        f"SELECT {CHUNK_COLUMNS}, data FROM chunks WHERE key > ? AND key < ? ORDER BY key",
        (base + after, base + (1 << SEQ_BITS)),
    )
    try:
        for key, first, sizes, ss, cs, sums, crc, data in cur:
            lengths = chunks.checked_sizes(key, first, sizes, ss, cs, sums, crc, len(data))
            previous, last = last, key & SEQ_MASK
            if lengths is None:
                damaged.append((previous + 1, last))
                continue
            for seq, sealed in chunks.messages_after(first, lengths, sums, data, after):
                if sealed is None:
                    damaged.append((seq, seq))
                    continue
                out.append(StoredMessage(seq, sealed))
                total += len(sealed)
                if total >= max_bytes or len(out) >= limit:
                    return out
    finally:
        cur.close()
    return out
