"""Reading a room's chunks from its stream: one chunk, the last, a page, a seq's place.

Reads go to the stream's leader (the JetStream stream API), which holds every chunk it
acknowledged: a replica may lag it by a few writes, and a page missing its newest
chunks would look like a gap retention made (fan-out would skip it, trimming would
purge too much). Only a room's head for WELCOME and for starting this node's fan-out
is read with a direct get (`direct=True`, answered by any replica): a stale head there
only means the fan-out fills in the rest.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.js.errors import NotFoundError

from ..backend import StoredMessage
from ..config import Retention
from ..logfmt import log_event
from .chunks import Chunk, ChunkError, Floor, decode
from .layout import Layout
from .link import Link

log = logging.getLogger("ghostline.relay")

PAGE_CHUNKS = 64  # chunks per page at most
PAGE_BYTES = 4 * 2**20


@dataclass(frozen=True, slots=True)
class Stored:
    sseq: int  # stream seq
    chunk: Chunk
    stamp: float  # when it was stored (POSIX time)


class Reader:
    def __init__(self, link: Link, layout: Layout, retention: Retention) -> None:
        self.link = link
        self.layout = layout
        self.retention = retention

    async def get(
        self, room: bytes, *, seq: int | None = None, direct: bool = False
    ) -> Stored | None:
        """The room's last chunk, or (seq given) its first chunk at or after stream seq
        `seq`; None if there is none."""
        stream, subject = self.layout.stream(room), self.layout.room_subject(room)
        request: dict[str, Any] = (
            {"last_by_subj": subject} if seq is None else {"seq": seq, "next_by_subj": subject}
        )
        while True:
            if not direct:
                found = await self.leader_get(stream, request)
            else:
                raw = await self.link.direct(stream, request)
                found = None
                if raw is not None:
                    sseq, headers, body = raw
                    found = (sseq, body, _stamp(headers.get("Nats-Time-Stamp", "")))
            if found is None:
                return None
            stored = self._decode(room, *found)
            if stored is not None or seq is None:
                return stored
            request["seq"] = found[0] + 1  # skip a damaged chunk (logged)

    async def leader_get(
        self, stream: str, request: dict[str, Any]
    ) -> tuple[int, bytes, float] | None:
        """(stream seq, body, store time) of the message a STREAM.MSG.GET request names,
        answered by the stream's leader; None if there is none."""
        try:
            resp = await self.link.api(f"STREAM.MSG.GET.{stream}", request)
        except NotFoundError:
            return None
        msg = resp["message"]
        return int(msg["seq"]), base64.b64decode(msg.get("data") or ""), _stamp(msg["time"])

    def _decode(self, room: bytes, sseq: int, body: bytes, stamp: float) -> Stored | None:
        try:
            return Stored(sseq, decode(body), stamp)
        except ChunkError as err:
            log_event(
                log, "cluster_chunk_damaged", level=logging.ERROR, room=room.hex(), sseq=sseq,
                error=str(err),
            )  # fmt: skip
            return None

    async def page(
        self, room: bytes, start: int, count: int = PAGE_CHUNKS, max_bytes: int = PAGE_BYTES
    ) -> list[Stored]:
        """Up to `count` of the room's chunks from stream seq `start`, stopping once
        `max_bytes` are reached (always at least one)."""
        out: list[Stored] = []
        size = 0
        while len(out) < count and size < max_bytes:
            stored = await self.get(room, seq=start)
            if stored is None:
                break
            out.append(stored)
            size += len(stored.chunk.items.data)
            start = stored.sseq + 1
        return out

    async def first(
        self, room: bytes, hi: Stored, holds: Callable[[Stored], bool], lo: int = 0
    ) -> Stored:
        """The room's first chunk after stream seq `lo` for which `holds` is true, given
        that it is for `hi` and, once true, for every later chunk (binary search over
        stream seqs: a few reads, however long the room)."""
        best, up = hi, hi.sseq
        while up - lo > 1:
            mid = (lo + up) // 2
            probe = await self.get(room, seq=mid)
            if probe is None or probe.sseq >= up:
                up = mid  # no chunk in [mid, up): look below
            elif holds(probe):
                best, up = probe, probe.sseq
            else:
                lo = probe.sseq
        return best

    async def read(
        self, room: bytes, after: int, limit: int = 256, max_bytes: int = PAGE_BYTES
    ) -> list[StoredMessage]:
        """The room's held messages after `after`: at most `limit`, stopping once
        `max_bytes` are reached (always at least one)."""
        last = await self.get(room)
        if last is None or last.chunk.last <= after:
            return []
        floor = Floor.of(last.chunk.last, last.chunk.total, self.retention)
        since = max(after, floor.seq - 1)
        start = (await self.first(room, last, lambda s: s.chunk.last > since)).sseq
        out: list[StoredMessage] = []
        total = 0
        while len(out) < limit and total < max_bytes and start <= last.sseq:
            chunks = await self.page(room, start, max_bytes=max(max_bytes - total, 1))
            if not chunks:
                break
            for stored in chunks:
                start = stored.sseq + 1
                for m in floor.held(stored.chunk, after):
                    out.append(m)
                    total += len(m.sealed)
                    if len(out) >= limit or total >= max_bytes:
                        return out
        return out


def _stamp(text: str) -> float:
    """A JetStream store time (RFC 3339, nanoseconds, UTC) as a POSIX time."""
    if not text:
        return 0.0
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))
