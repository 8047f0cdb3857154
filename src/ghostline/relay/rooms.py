"""Rooms: who is connected, group commit of publishes, fan-out, presence.

Publishes that arrive in one turn of the event loop, from any connection of any
room, are stored by ONE `Backend.append` call (one transaction, one fsync). Only when
it returns does each publisher get ACCEPTED and each other connection its DELIVERs,
and every connection gets everything from that commit in a single write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..protocol.frames import (
    DELIVER_BODY_HEAD,
    DELIVER_HEAD,
    ErrorCode,
    FrameType,
    deliver_seq,
    encode_accepted,
    encode_deliver,
    encode_member,
)
from .backend import Appended, Backend, Publish, StoredMessage
from .logfmt import log_event
from .metrics import Metrics

log = logging.getLogger("ghostline.relay")
_DELIVER = int(FrameType.DELIVER)


class Watcher(Protocol):
    """A presence-port connection, as the hub sees it (`ports.PresenceConnection`)."""

    room: bytes
    member: int

    def send(self, data: bytes) -> None: ...


class LimitedLog(Protocol):
    def __call__(
        self, key: str | None, event: str, *, level: int = logging.INFO, **fields: object
    ) -> None:
        """Log `event` within the limits of `key` (`admission.Admission.log`)."""


def _unlimited(key: str | None, event: str, *, level: int = logging.INFO, **fields: object) -> None:
    log_event(log, event, level=level, **fields)


class Subscriber(Watcher, Protocol):
    """A relay-port connection, as the hub sees it (`ports.RelayConnection`)."""

    id: int
    source: str  # its address, as the per-address limits count it
    open: bool
    replaying: bool
    inflight: int

    def buffer_live(self, frames: Iterable[tuple[int, bytes]]) -> None:
        """Hold live DELIVER frames (seq, frame) while the connection replays."""

    def fail(self, code: int, reason: str) -> None: ...

    def after_commit(self) -> None:
        """Called once per commit that held its publishes (stored or not)."""


@dataclass(eq=False)
class Room:
    id: bytes
    relay: set[Subscriber] = field(default_factory=set)
    presence: set[Watcher] = field(default_factory=set)
    local: dict[int, int] = field(default_factory=dict)  # member -> relay connections here
    elsewhere: frozenset[int] = frozenset()  # online through other nodes (cluster)
    announced: frozenset[int] = frozenset()  # the online set presence watchers last saw

    def online(self) -> frozenset[int]:
        return frozenset(self.local) | self.elsewhere

    def idle(self) -> bool:
        return not self.relay and not self.presence and not self.elsewhere


class RoomHub:
    """The relay's rooms on this node. Implements `backend.RelayHub`."""

    def __init__(
        self, backend: Backend, metrics: Metrics | None = None, log: LimitedLog | None = None
    ) -> None:
        self.backend = backend
        self.metrics = metrics or Metrics()
        # lines a member can cause at will (a resent message), within the log's limits
        self.log: LimitedLog = log or _unlimited
        self.rooms: dict[bytes, Room] = {}
        self._pending: list[Publish] = []  # the next commit's publishes, in order
        self._senders: list[tuple[Subscriber, int]] = []  # who sent them: runs
        self._scheduled = False
        self._committing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _room(self, room_id: bytes) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(room_id)
        return room

    def _maybe_drop(self, room: Room) -> None:
        if room.idle():
            self.rooms.pop(room.id, None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- membership and presence -----------------------------------------------------

    def join_relay(self, conn: Subscriber) -> None:
        room = self._room(conn.room)
        room.relay.add(conn)
        count = room.local.get(conn.member, 0)
        room.local[conn.member] = count + 1
        if count == 0:
            self._spawn(self.backend.set_presence(room.id, conn.member, True))
            self._announce(room)

    def leave_relay(self, conn: Subscriber) -> None:
        room = self.rooms.get(conn.room)
        if room is None or conn not in room.relay:
            return
        room.relay.discard(conn)
        count = room.local[conn.member] - 1
        if count:
            room.local[conn.member] = count
        else:
            del room.local[conn.member]
            self._spawn(self.backend.set_presence(room.id, conn.member, False))
            self._announce(room)
        self._maybe_drop(room)

    def join_presence(self, conn: Watcher) -> frozenset[int]:
        room = self._room(conn.room)
        room.presence.add(conn)
        return room.announced

    def leave_presence(self, conn: Watcher) -> None:
        room = self.rooms.get(conn.room)
        if room is not None:
            room.presence.discard(conn)
            self._maybe_drop(room)

    def on_presence(self, room_id: bytes, online_elsewhere: frozenset[int]) -> None:
        room = self._room(room_id)
        room.elsewhere = online_elsewhere
        self._announce(room)
        self._maybe_drop(room)

    def _announce(self, room: Room) -> None:
        online = room.online()
        before = room.announced
        if online == before:
            return
        room.announced = online
        frames = [encode_member(FrameType.ONLINE, m) for m in sorted(online - before)]
        frames += [encode_member(FrameType.OFFLINE, m) for m in sorted(before - online)]
        data = b"".join(frames)
        for watcher in list(room.presence):
            watcher.send(data)

    # --- publish: group commit, then ACCEPTED and fan-out -----------------------------

    def submit_many(self, conn: Subscriber, publishes: list[Publish]) -> None:
        """Queue `publishes` (all from `conn`, in order) for the next commit."""
        count = len(publishes)
        if not count:
            return
        conn.inflight += count
        self.metrics.publishes += count
        self._pending.extend(publishes)
        self._senders.append((conn, count))
        if not self._scheduled and not self._committing:
            self._scheduled = True
            self._idle.clear()
            # call_soon runs after every other ready callback of this loop turn, so all
            # publishes read in this turn, from every connection, share one commit.
            asyncio.get_running_loop().call_soon(self._commit_next)

    def _commit_next(self) -> None:
        self._scheduled = False
        if self._committing:
            return
        if not self._pending:
            self._idle.set()
            return
        batch, self._pending = self._pending, []
        senders, self._senders = self._senders, []
        self._committing = True
        self._idle.clear()
        self._spawn(self._commit(batch, senders))

    async def _commit(self, batch: list[Publish], senders: list[tuple[Subscriber, int]]) -> None:
        started = time.perf_counter()
        try:
            results = await self.backend.append(batch)
        except Exception as err:  # the store failed: nothing in this batch is ACCEPTED
            self.metrics.store_failures += 1
            log_event(log, "store_failed", level=logging.ERROR, messages=len(batch), error=err)
            for conn, count in senders:
                conn.inflight -= count
            for conn in {c for c, _ in senders}:
                conn.fail(ErrorCode.INTERNAL, "the relay could not store the message")
                conn.after_commit()
            results = None
        finally:
            self._committing = False
            self.metrics.store_seconds.observe(time.perf_counter() - started)
        if results is None:
            self._commit_next()
            return
        self._dispatch(batch, senders, results)
        if not self._committing and not self._scheduled:
            self._commit_next()

    async def drain(self) -> None:
        """Wait until every submitted publish has been stored and answered."""
        while not (self._idle.is_set() and not self._pending and not self._committing):
            await self._idle.wait()
            if self._pending and not self._committing and not self._scheduled:
                self._commit_next()

    def _dispatch(
        self,
        batch: list[Publish],
        senders: list[tuple[Subscriber, int]],
        results: list[Appended],
    ) -> None:
        # Per room: every DELIVER frame is built once, as two parts (its head, then the
        # sealed message), and the parts joined into one buffer; a member who did not
        # publish gets that buffer, a publisher gets it with each run of its own
        # messages' DELIVERs replaced by their ACCEPTEDs (so, in commit order).
        # `senders` cuts `batch` into runs of one connection's publishes. The loop over
        # messages is the fan-out's hot path: one pack per frame, nothing else made.
        per_room: dict[bytes, _RoomBatch] = {}
        metrics = self.metrics
        pack_head, accepted_frame = DELIVER_HEAD.pack, encode_accepted
        duplicates = i = 0
        for conn, count in senders:
            conn.inflight -= count
            run = batch[i : i + count]
            outcomes = results[i : i + count]
            i += count
            room_id = run[0].room
            rb = per_room.get(room_id)
            if rb is None:
                rb = per_room[room_id] = _RoomBatch()
            mine = rb.mine.get(conn)
            if mine is None:
                mine = rb.mine[conn] = []
            parts = rb.parts
            start = len(parts)
            accepted: list[bytes] = []
            new = count
            for pub, (seq, duplicate, preceded_by) in zip(run, outcomes, strict=True):
                if preceded_by:  # another node's messages that come first (cluster)
                    if accepted:
                        mine.append((start, len(parts), b"".join(accepted)))
                        accepted = []
                    for m in preceded_by:
                        parts += (pack_head(len(m.sealed) + DELIVER_BODY_HEAD, _DELIVER, m.seq),
                                  m.sealed)  # fmt: skip
                    start = len(parts)
                accepted.append(accepted_frame(seq, pub[2]))
                if duplicate:
                    new -= 1
                    self.log(
                        f"duplicate {conn.source}", "duplicate", conn=conn.id,
                        room=room_id.hex(), member=conn.member, seq=seq, counter=pub[2],
                    )  # fmt: skip
                    continue
                sealed = pub[3]
                parts += (pack_head(len(sealed) + DELIVER_BODY_HEAD, _DELIVER, seq), sealed)
            if accepted:
                mine.append((start, len(parts), b"".join(accepted)))
            rb.own[conn] = rb.own.get(conn, 0) + new
            duplicates += count - new
        metrics.duplicates += duplicates
        metrics.stored += len(batch) - duplicates
        delivered = 0
        for room_id, rb in per_room.items():
            room = self.rooms.get(room_id)
            parts = rb.parts
            full = b"".join(parts)
            mine_of = rb.mine
            targets = list(room.relay) if room is not None else []
            targets += [c for c in mine_of if c.open and (room is None or c not in room.relay)]
            delivered += len(parts) // 2 * len(targets) - sum(rb.own.get(c, 0) for c in targets)
            for conn in targets:
                mine = mine_of.get(conn)
                if conn.replaying:
                    own = [(a, b) for a, b, _ in mine or ()]
                    conn.buffer_live(
                        [
                            (deliver_seq(parts[k]), parts[k] + parts[k + 1])
                            for k in range(0, len(parts), 2)
                            if not any(a <= k < b for a, b in own)
                        ]
                    )
                    if mine:
                        conn.send(b"".join([a for _, _, a in mine]))
                elif mine is None:
                    conn.send(full)
                else:  # its own DELIVERs replaced by its ACCEPTEDs
                    pieces: list[bytes] = []
                    at = 0
                    for a, b, accepted_run in mine:
                        pieces += parts[at:a]
                        pieces.append(accepted_run)
                        at = b
                    pieces += parts[at:]
                    conn.send(b"".join(pieces))
        metrics.deliveries += delivered
        for conn in {c for c, _ in senders}:
            conn.after_commit()

    def on_remote_messages(self, room_id: bytes, messages: Sequence[StoredMessage]) -> None:
        room = self.rooms.get(room_id)
        if room is None or not messages:
            return
        # Each DELIVER as its head and the sealed message, joined once for all (the same
        # hot path as `_dispatch`); whole frames only for a connection still replaying.
        pack_head = DELIVER_HEAD.pack
        parts: list[bytes] = []
        for seq, sealed in messages:
            parts += (pack_head(len(sealed) + DELIVER_BODY_HEAD, _DELIVER, seq), sealed)
        full = b"".join(parts)
        targets = list(room.relay)
        self.metrics.deliveries += len(messages) * len(targets)
        for conn in targets:
            if conn.replaying:
                conn.buffer_live([(m.seq, encode_deliver(m.seq, m.sealed)) for m in messages])
            else:
                conn.send(full)


class _RoomBatch:
    """One room's share of a commit, as `_dispatch` assembles it."""

    __slots__ = ("parts", "mine", "own")

    def __init__(self) -> None:
        self.parts: list[bytes] = []  # DELIVER frames: head, sealed, head, sealed, ...
        # per publisher: (start, end, ACCEPTED frames) of each run of its messages: the
        # parts [start, end) are its DELIVERs (none for duplicates)
        self.mine: dict[Subscriber, list[tuple[int, int, bytes]]] = {}
        self.own: dict[Subscriber, int] = {}  # per publisher: its new messages' DELIVERs
