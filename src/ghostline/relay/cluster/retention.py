"""Retention in the cluster: count, bytes and age per room, as on a single node.

Count and bytes are exact on every read (`chunks.Floor`: a message is held while it is
among the room's newest `max_messages` and the bytes from it to the head fit in
`max_bytes`; the newest always stays). Storage follows behind: after an append, the
room's owner purges the chunks wholly below the floor once the room holds an eighth
more than its limits (so a room at its limit is not purged on every append). Late
receipts go with their chunks: a purge removes both below the same stream seq.

Age is applied per chunk (a chunk's messages were stored together) by the owner's
expiry sweep: chunks stored before the cutoff are purged; a room that would be left
empty keeps a body-less marker chunk (count 0) holding its head, byte total and tops,
so its numbering and duplicate detection go on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nats.js.errors import APIError

from ..config import Retention
from ..logfmt import log_event
from . import chunks
from .chunks import Floor
from .layout import ROOM_SUBJECT, Layout, stream_name
from .link import Link, transient
from .paging import Reader, Stored

log = logging.getLogger("ghostline.relay")

H_EXPECT = "Nats-Expected-Last-Subject-Sequence"
SLACK = 8  # purge once a room holds 1/SLACK more than its limits


class Keeper:
    def __init__(
        self,
        link: Link,
        layout: Layout,
        reader: Reader,
        retention: Retention,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        owns: Callable[[bytes], bool],
        forget: Callable[[bytes], None],
    ) -> None:
        self.link = link
        self.layout = layout
        self.reader = reader
        self.retention = retention
        self._spawn = spawn
        self._owns = owns
        self._forget = forget  # the journal's cached head of a room (a marker replaced it)
        self._firsts: dict[bytes, Stored] = {}  # per room: its first stored chunk, as known
        # A room the age limit emptied (registry.py: retired if nobody holds it).
        self.emptied: Callable[[bytes], Awaitable[object]] | None = None
        self._trimming: set[bytes] = set()

    # --- count and bytes -----------------------------------------------------------------

    def after_store(self, room: bytes, head: Stored) -> None:
        """A chunk was stored: purge the room's old chunks if it is well over its limits."""
        if room in self._trimming:
            return
        first = self._firsts.get(room)
        if first is not None and not self._over(first, head):
            return
        self._trimming.add(room)
        self._spawn(self._trim(room, head))

    def _over(self, first: Stored, head: Stored) -> bool:
        r = self.retention
        count = head.chunk.last - first.chunk.first + 1
        held = head.chunk.total - (first.chunk.total - len(first.chunk.items.data))
        return count > r.max_messages + r.max_messages // SLACK or (
            held > r.max_bytes + r.max_bytes // SLACK
        )

    async def _trim(self, room: bytes, head: Stored) -> None:
        try:
            first = self._firsts.get(room) or await self.reader.get(room, seq=1)
            if first is None:
                return
            self._firsts[room] = first
            if not self._over(first, head):
                return
            floor = Floor.of(head.chunk.last, head.chunk.total, self.retention)
            keep = await self._first_held(room, first, head, floor)
            if keep.sseq > first.sseq:
                await self.purge(room, keep.sseq)
            self._firsts[room] = keep
        except Exception as err:  # the next append tries again
            log_event(log, "cluster_trim_failed", level=logging.WARNING, room=room.hex(),
                      error=repr(err))  # fmt: skip
        finally:
            self._trimming.discard(room)

    async def _first_held(self, room: bytes, first: Stored, head: Stored, floor: Floor) -> Stored:
        """The room's first chunk that holds a message retention keeps (its last message
        is held, and so is every later one)."""
        if floor.held(first.chunk):
            return first

        def holds(s: Stored) -> bool:
            chunk = s.chunk
            last_size = chunk.items.sizes[-1] if chunk.count else 0
            return s.sseq >= head.sseq or floor.holds(chunk.last, chunk.total - last_size)

        return await self.reader.first(room, head, holds, lo=first.sseq)

    async def purge(self, room: bytes, keep_from: int) -> int:
        """Remove the room's chunks, and their late receipts, below stream seq
        `keep_from`; returns how many chunks went."""
        stream = self.layout.stream(room)
        purged = 0
        for subject in (self.layout.room_subject(room), self.layout.late_prefix(room) + ">"):
            resp = await self.link.api(
                f"STREAM.PURGE.{stream}", {"filter": subject, "seq": keep_from}
            )
            if subject.startswith(ROOM_SUBJECT):
                purged = int(resp.get("purged", 0))
        return purged

    # --- age -----------------------------------------------------------------------------

    async def expire(self, now: float) -> int:
        """Apply the age limit to the rooms this node owns; returns how many messages
        went. While NATS or a stream's leader is away, the rest waits for the next sweep."""
        if not self.link.up:
            return 0
        cutoff = now - self.retention.max_age
        removed = 0
        for k in range(self.layout.streams):
            try:
                removed += await self._expire_stream(k, cutoff)
            except Exception as err:
                if not transient(err):
                    raise
                log_event(log, "cluster_expire_postponed", stream=stream_name(k),
                          error=type(err).__name__)  # fmt: skip
        return removed

    async def _expire_stream(self, k: int, cutoff: float) -> int:
        _, js = self.link.connected()
        removed = 0
        info = await js.stream_info(stream_name(k), subjects_filter=f"{ROOM_SUBJECT}{k}.*")
        for subject in info.state.subjects or {}:
            room = bytes.fromhex(subject.rsplit(".", 1)[1])
            if self._owns(room):
                removed += await self._expire_room(room, cutoff)
        return removed

    async def _expire_room(self, room: bytes, cutoff: float) -> int:
        first = await self.reader.get(room, seq=1)
        if first is None or first.stamp >= cutoff:
            return 0
        last = await self.reader.get(room)
        if last is None:
            return 0
        if last.stamp < cutoff:
            if last.chunk.count == 0 and first.sseq == last.sseq:
                return 0  # only its marker is left
            keep = await self._mark(room, last)
            if keep is None:
                return 0  # someone appended meanwhile: next round
        else:
            keep = await self._first_since(room, first, last, cutoff)
        await self.purge(room, keep.sseq)
        self._firsts[room] = keep
        if keep.chunk.count == 0 and self.emptied is not None:
            await self.emptied(room)
        return max(0, keep.chunk.first - first.chunk.first)

    async def _mark(self, room: bytes, last: Stored) -> Stored | None:
        """Store a marker after the room's last chunk (None if another write came first)."""
        chunk = last.chunk
        body, marker = chunks.build(
            chunk.last, chunk.total, chunk.tops, chunks.EMPTY, os.urandom(chunks.WRITE_ID_LEN),
            self.link.node,
        )  # fmt: skip
        _, js = self.link.connected()
        try:
            ack = await js.publish(
                self.layout.room_subject(room), body, stream=self.layout.stream(room),
                headers={H_EXPECT: str(last.sseq)},
            )  # fmt: skip
        except APIError:
            return None
        self._forget(room)
        return Stored(ack.seq, marker, 0.0)

    async def _first_since(self, room: bytes, lo: Stored, hi: Stored, cutoff: float) -> Stored:
        """The room's first chunk stored at or after `cutoff`, given that `lo` is older
        and `hi` is not."""
        return await self.reader.first(room, hi, lambda s: s.stamp >= cutoff, lo=lo.sseq)
