"""Handing every stored message of a room to this node's hub exactly once, in seq order.

Per room a cursor: the highest seq this node's hub has fanned out. Messages reach a node
three ways: its own appends (the hub dispatches them itself when `append` returns),
chunks this node stored for others (`stored`, straight from the journal), and chunks
other nodes stored (republished by JetStream to `ghostline.live.<room>`, `on_live`).
Only rooms this node hosts are tracked (`hosted`, kept by hosting.py, which takes their
live subjects): their cursor starts at the head a joining member reads, and goes when
the room's last connection here does.
The republish of a chunk this node wrote itself (its write id starts with `writer`) is
not decoded: the first two ways carry its messages, and its `last` only tells how far
the room is stored, which fills from the stream whatever they did not carry (e.g. a
write whose acknowledgement was lost). Each is delivered when it is next in line; a
gap (a republish missed while cut off from NATS) is filled from the stream after
`GAP_WAIT`. While this node's hub is appending to a room (`busy`), other messages for
it are held and handed over with the hub's own results (`Appended.preceded_by`, see
`interleave`), so no connection sees seqs go back. A chunk that arrives then is held
undecoded (`deferred`) and decoded only when needed, once the append's own results are
known: its messages that this node forwarded itself (it holds them) are not made again,
and the owner's reply is not kept waiting behind the decoding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg

from ..backend import Appended, RelayHub, StoredMessage
from ..logfmt import log_event
from .chunks import ChunkError, decode, peek_last, peek_writer
from .layout import room_of
from .link import StorageUnavailable
from .paging import Reader

log = logging.getLogger("ghostline.relay")

GAP_WAIT = 0.1  # seconds a missing seq may take to arrive before it is read from the stream
FILL_PAGE = 256


@dataclass(slots=True)
class _Fan:
    cursor: int
    known: int = 0  # the highest seq of the room seen stored (head, live chunk)
    pending: dict[int, StoredMessage] = field(default_factory=dict)
    deferred: list[bytes] = field(default_factory=list)  # chunk bodies not decoded yet
    filling: bool = False


class Fanout:
    def __init__(self, reader: Reader, spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.reader = reader
        self.hub: RelayHub | None = None
        self.busy: set[bytes] = set()  # rooms this node's hub is appending to right now
        self.closing = False
        self.writer = b""  # how this node's own chunks start their write id (journal.py)
        self._spawn = spawn
        self._fans: dict[bytes, _Fan] = {}
        self.hosted: set[bytes] = set()  # rooms whose live subject this node takes (hosting.py)
        self._early: dict[bytes, int] = {}  # per hosted room not tracked yet: last seq seen

    def tracking(self, room: bytes) -> bool:
        return room in self._fans

    def cursor(self, room: bytes) -> int | None:
        fan = self._fans.get(room)
        return fan.cursor if fan is not None else None

    def behind(self) -> set[bytes]:
        """Rooms where more is known stored than was handed out."""
        return {room for room, fan in self._fans.items() if fan.known > fan.cursor}

    def seen_head(self, room: bytes, head: int) -> None:
        """The room's head is `head`: start tracking it there (if hosted), or fill up to it."""
        fan = self._fans.get(room)
        if fan is None:
            if room not in self.hosted:
                return  # nobody here to hand it to (e.g. a catch-up after the room left)
            fan = self._fans[room] = _Fan(head)
            head = max(head, self._early.pop(room, 0))  # came live before the head read
        fan.known = max(fan.known, head)
        if fan.known > fan.cursor and room not in self.busy:
            self.drain(room)  # something stored never came live (e.g. lost in an outage)

    async def fetch_head(self, room: bytes) -> int:
        """The room's newest seq, read from the stream, and never below what this node
        fanned out already (a joining member replays up to it, gets the rest live).

        The read that starts tracking a room asks the stream's leader: this node has
        just subscribed to the room (hosting.py), and a chunk stored before nats-server
        routed that subscription to the leader came neither live nor, from a replica
        that lags, in the head. Later reads may take any replica (direct get)."""
        last = await self.reader.get(room, direct=room in self._fans)
        head = last.chunk.last if last is not None else 0
        self.seen_head(room, head)
        fan = self._fans.get(room)
        return max(head, fan.cursor) if fan is not None else head

    def forget(self, room: bytes) -> None:
        """This node no longer hosts `room`: drop what it kept for it."""
        self.hosted.discard(room)
        self._fans.pop(room, None)
        self._early.pop(room, None)

    # --- arrivals ------------------------------------------------------------------------

    def stored(self, room: bytes, messages: Sequence[StoredMessage]) -> None:
        """Messages this node just stored in `room` (for itself or for another node)."""
        fan = self._fans.get(room)
        if fan is None or not messages:
            return
        fan.known = max(fan.known, messages[-1].seq)
        if messages[0].seq <= fan.cursor:
            messages = [m for m in messages if m.seq > fan.cursor]
        self._arrived(room, fan, messages)

    async def on_live(self, msg: Msg) -> None:
        room = room_of(msg.subject)
        if room is None or room not in self.hosted:
            return  # (one queued before the room's subscription ended)
        fan = self._fans.get(room)
        data = msg.data
        try:
            last = peek_last(data)
            if fan is None:  # subscribed, head not read yet: the head read fills up to it
                self._early[room] = max(self._early.get(room, 0), last)
                return
            if last <= fan.cursor:
                return  # delivered before: not worth decoding
            if peek_writer(data) == self.writer:  # ours: the journal hands its messages over
                fan.known = max(fan.known, last)
                if room not in self.busy:
                    self.drain(room)
                return
            if room in self.busy:
                fan.known = max(fan.known, last)
                fan.deferred.append(data)  # decoded once the append's results are known
                return
            chunk = decode(data)
        except ChunkError as err:
            _damaged(room, err)
            return
        fan.known = max(fan.known, chunk.last)
        self._arrived(room, fan, chunk.messages(fan.cursor))

    def _arrived(self, room: bytes, fan: _Fan, messages: Sequence[StoredMessage]) -> None:
        """Messages above the cursor, in seq order. The usual case, a run that is next in
        line with nothing else waiting, goes to the hub at once; anything else waits in
        `pending` for `drain`."""
        hub = self.hub
        if (
            messages
            and messages[0].seq == fan.cursor + 1
            and messages[-1].seq == fan.cursor + len(messages)
            and not fan.pending
            and not fan.deferred
            and room not in self.busy
            and hub is not None
        ):
            fan.cursor += len(messages)
            hub.on_remote_messages(room, messages)
            self._fill_later(room, fan)
            return
        for m in messages:
            fan.pending[m.seq] = m
        if room not in self.busy:
            self.drain(room)

    def _undefer(self, room: bytes, fan: _Fan) -> None:
        """Decode the held chunks, keeping their messages above the cursor."""
        deferred, fan.deferred = fan.deferred, []
        for data in deferred:
            try:
                if peek_last(data) <= fan.cursor:
                    continue  # all delivered meanwhile (e.g. this node's own messages)
                chunk = decode(data)
            except ChunkError as err:
                _damaged(room, err)
                continue
            for m in chunk.messages(fan.cursor):
                fan.pending[m.seq] = m

    def drain(self, room: bytes) -> None:
        """Hand the hub every message that is next in line; schedule a fill on a gap."""
        fan = self._fans.get(room)
        if fan is None or room in self.busy:
            return
        if fan.deferred:
            self._undefer(room, fan)
        ready: list[StoredMessage] = []
        pending = fan.pending
        while fan.cursor + 1 in pending:
            fan.cursor += 1
            ready.append(pending.pop(fan.cursor))
        for seq in [s for s in fan.pending if s <= fan.cursor]:
            del fan.pending[seq]
        if ready and self.hub is not None:
            self.hub.on_remote_messages(room, ready)
        self._fill_later(room, fan)

    def _fill_later(self, room: bytes, fan: _Fan) -> None:
        if (fan.pending or fan.known > fan.cursor) and not fan.filling:
            fan.filling = True
            self._spawn(self._fill(room, fan, max([fan.known, *fan.pending])))

    async def _fill(self, room: bytes, fan: _Fan, target: int) -> None:
        """Read from the stream what should have come live but did not (in time): up to
        `target`, the newest seq known when the gap was seen. What became known since is
        given its own GAP_WAIT (the drain after this fill looks again): on a busy room
        something is nearly always on its way, and reading it now would read from the
        stream, over and over, what arrives a moment later anyway."""
        try:
            await asyncio.sleep(GAP_WAIT)
            # (nothing to read: what became known since the gap was seen is drained below)
            if room not in self.busy and not self.closing and target > fan.cursor:
                page = await self.reader.read(room, fan.cursor, min(FILL_PAGE, target - fan.cursor))
                for m in page:
                    if m.seq > fan.cursor:
                        fan.pending.setdefault(m.seq, m)
                if room not in self.busy and (not page or page[0].seq > fan.cursor + 1):
                    # retention removed the missing ones: go on with what is stored
                    fan.cursor = max(fan.cursor, (page[0].seq if page else target) - 1)
        except StorageUnavailable:
            return  # the reconnect catches up
        except Exception as err:
            log_event(log, "cluster_fill_failed", level=logging.WARNING, room=room.hex(),
                      error=repr(err))  # fmt: skip
            await asyncio.sleep(GAP_WAIT)
        finally:
            fan.filling = False
        if not self.closing:
            self.drain(room)

    async def catch_up(self, room: bytes) -> None:
        """After a reconnect: learn the head, so what this node missed gets filled."""
        try:
            await self.fetch_head(room)
        except Exception as err:  # the next reconnect or live chunk tries again
            log_event(log, "cluster_catch_up_failed", level=logging.WARNING, room=room.hex(),
                      error=repr(err))  # fmt: skip

    # --- this node's own appends ---------------------------------------------------------

    async def interleave(self, room: bytes, idx: list[int], results: list[Appended | None]) -> None:
        """Attach to each new local message the other nodes' messages that precede it."""
        fan = self._fans.get(room)
        if fan is None:
            return  # not hosted (`append` read the head of every room it holds)
        for i in idx:
            res = results[i]
            assert res is not None
            if res.duplicate or res.seq <= fan.cursor:
                continue
            before: list[StoredMessage] = []
            if res.seq > fan.cursor + 1:
                before = await self._between(room, fan, res.seq)
            fan.cursor = res.seq
            fan.known = max(fan.known, res.seq)
            fan.pending.pop(res.seq, None)
            if before:
                results[i] = Appended(res.seq, False, tuple(before))

    async def _between(self, room: bytes, fan: _Fan, upto: int) -> list[StoredMessage]:
        """Messages cursor+1 .. upto-1 of `room`, from what arrived or else the stream."""
        want = range(fan.cursor + 1, upto)
        if fan.deferred:
            self._undefer(room, fan)
        if any(s not in fan.pending for s in want):
            after = fan.cursor
            while after < upto - 1:
                page = await self.reader.read(room, after, min(FILL_PAGE, upto - 1 - after))
                if not page:
                    break
                for m in page:
                    if m.seq < upto:
                        fan.pending.setdefault(m.seq, m)
                after = page[-1].seq
        return [fan.pending.pop(s) for s in want if s in fan.pending]


def _damaged(room: bytes, err: ChunkError) -> None:
    log_event(log, "cluster_chunk_damaged", level=logging.ERROR, room=room.hex(), error=str(err))
