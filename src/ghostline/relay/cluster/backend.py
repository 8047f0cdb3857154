"""The cluster backend: several relay nodes share their rooms through NATS JetStream.

This is the facade the relay's hub talks to (`relay.backend.Backend`); the work is done
by parts with one job each, wired together here:

    link.py       the NATS connection; waiting out a NATS hiccup
    layout.py     streams, subjects and buckets; the stream count and store id
    chunks.py     one room's share of a commit as one stream message (pure codec)
    journal.py    storing on a room's owner: one chunk per room per round, per stream
    dedupe.py     exact duplicate look-ups (counter tops, late receipts)
    ownership.py  one writer per room; forwarding to the owner (codec: forward.py)
    paging.py     reading chunks (resume, gaps, look-ups)
    fanout.py     every stored message to this node's hub once, in seq order
    hosting.py    which rooms this node hosts: only their chunks are sent to it
    retention.py  count, bytes and age per room
    presence.py   cluster-wide presence, and which nodes are alive
    registry.py   rosters, and which rooms are live (--max-rooms); retiring rooms

docs/DEPLOYMENT.md ("Cluster") says what an operator sees and what is guaranteed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from nats.js.kv import KeyValue

from ..backend import Appended, Backend, Publish, RelayHub, Roster, StoredMessage
from ..config import Retention
from ..logfmt import log_event
from ..stopping import stop
from .fanout import Fanout
from .hosting import PENDING_BYTES, PENDING_MSGS, Hosting
from .items import Items
from .journal import Journal
from .layout import (
    ALIVE_SUBJECT,
    APPEND_SUBJECT,
    PRESENCE_SUBJECT,
    SYNC_SUBJECT,
    Layout,
    leaders,
    log_placement,
    open_layout,
    spread_leaders,
)
from .link import STALL_LIMIT, ClusterConfig, Link
from .ownership import Ownership
from .paging import Reader
from .presence import Presence
from .registry import Registry
from .retention import Keeper

log = logging.getLogger("ghostline.relay")
T = TypeVar("T")

PLACEMENT_EVERY = 10.0  # seconds between checks of where the stream leaders are


class NatsBackend(Backend):
    def __init__(self, config: ClusterConfig, retention: Retention | None = None) -> None:
        self.config = config
        self.node = config.node
        self.retention = retention or Retention()
        self.link = Link(config, self._reconnected, self._slow)
        self.layout: Layout | None = None
        self._rooms_kv: KeyValue | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._placement: dict[str, str] = {}
        self.presence = Presence(self.link, self._spawn)

    # --- lifecycle -----------------------------------------------------------------------

    def problem(self) -> str | None:
        if not self.link.up:
            return "NATS unreachable"
        return None

    async def open(self, hub: RelayHub) -> None:
        self.link.metrics = self.metrics
        await self.link.connect()
        try:
            self.layout, self._rooms_kv = await open_layout(self.link, self.retention)
        except BaseException:
            await self.link.close()
            raise
        self.store_id = self.layout.store_id
        reader = Reader(self.link, self.layout, self.retention)
        self.fanout = Fanout(reader, self._spawn)
        self.journal = Journal(
            self.link, self.layout, reader, self.retention,
            on_stored=self.fanout.stored, after_store=self._after_store,
        )  # fmt: skip
        self.fanout.writer = self.journal.writer
        self.hosting = Hosting(self.link, self.fanout, self._spawn)
        self.ownership = Ownership(self.link, self.presence, self.journal, self._spawn)
        self.keeper = Keeper(
            self.link, self.layout, reader, self.retention, self._spawn,
            owns=self.ownership.owns, forget=self.journal.forget,
        )  # fmt: skip
        assert self._rooms_kv is not None
        self.registry = Registry(
            self.link, self._rooms_kv, reader, self.presence, self.ownership.keeps
        )
        self.keeper.emptied = self.registry.retire
        self.fanout.hub = self.presence.hub = hub
        nc, _ = self.link.connected()
        for subject, cb in (
            (PRESENCE_SUBJECT + "*", self.presence.on_snapshot),
            (SYNC_SUBJECT, self.presence.on_sync),
            (APPEND_SUBJECT + self.node, self.ownership.on_forward),
            (ALIVE_SUBJECT + self.node, self.ownership.on_alive),
        ):
            await nc.subscribe(
                subject, cb=cb, pending_msgs_limit=PENDING_MSGS, pending_bytes_limit=PENDING_BYTES
            )
        await self.presence.hello()
        self._spawn(self.presence.heartbeat())
        self._spawn(self._watch_placement())
        self._spawn(self._sweep())
        # Debug only: the first stderr lines belong to the port lines (docs/DEPLOYMENT.md),
        # and `ghostline relay: cluster URLS node NAME` says the same thing right after.
        log_event(
            log, "cluster_open", level=logging.DEBUG, node=self.node,
            servers=",".join(self.config.servers), streams=self.layout.streams,
        )  # fmt: skip

    def _after_store(self, room: bytes, head: Any) -> None:
        self.keeper.after_store(room, head)

    async def close(self) -> None:
        self.presence.closing = True
        if self.layout is not None:
            self.fanout.closing = True
            await self.journal.close()
            await self.registry.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            err = await stop(task)  # (again and again if need be: see stopping.py)
            if err is not None:  # it failed before it was cancelled: say so
                log_event(log, "cluster_task_failed", level=logging.WARNING, error=repr(err))
        if self.link.up:
            await self.presence.goodbye()  # nobody here any more
        await self.link.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconnected(self) -> None:
        if self.layout is None:
            return
        self.journal.forget()  # appends may have landed that we never saw acknowledged
        self.presence.reconnected()
        await self.presence.hello()
        for room in self.fanout.behind() | self.presence.local_rooms:
            self._spawn(self.fanout.catch_up(room))

    def _slow(self) -> None:
        if self.layout is not None:
            for room in self.presence.local_rooms:
                self._spawn(self.fanout.catch_up(room))

    async def _watch_placement(self) -> None:
        """Log where each stream's leader is: once serving, and whenever it changed
        (looked at every second at first, while leaders settle, then every
        PLACEMENT_EVERY seconds)."""
        assert self.layout is not None
        await asyncio.sleep(1.0)  # after the port lines (docs/DEPLOYMENT.md)
        try:
            await spread_leaders(self.link, self.layout)
        except Exception as err:  # not now: JetStream is busy; the streams still work
            log_event(log, "cluster_leader_not_moved", error=repr(err))
        for looks in itertools.count():
            await asyncio.sleep(1.0 if looks < 5 else PLACEMENT_EVERY)
            if not self.link.up:
                continue
            try:
                placement = await leaders(self.link, self.layout)
            except Exception as err:  # a leader election in progress: look again later
                log_event(log, "cluster_streams_unknown", level=logging.DEBUG, error=repr(err))
                continue
            if placement != self._placement:
                log_placement(self.node, self.layout, placement)
                self._placement = placement

    # --- rosters -------------------------------------------------------------------------

    async def roster(self, room: bytes) -> Roster | None:
        return await self.registry.roster(room)

    async def bind_roster(self, room: bytes, roster: Roster, *, max_rooms: int) -> Roster:
        bound = await self.registry.bind(room, roster, max_rooms)
        try:  # before the join reads the room's head (hosting.py)
            await self.hosting.hold(room)
        except BaseException:
            self.release(room)
            raise
        return bound

    def release(self, room: bytes) -> None:
        if self.layout is not None:
            self.registry.release(room)
            if not self.registry.held_here(room):
                self.hosting.drop(room)

    async def _sweep(self) -> None:
        try:
            await self.registry.sweep()
        except Exception as err:  # rooms left live stay so until their next release
            log_event(log, "cluster_retire_failed", level=logging.WARNING, error=repr(err))

    async def _waiting(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """`op()`, waiting out NATS or a stream leader being briefly away as writes do
        (up to STALL_LIMIT): a member joining during a hiccup is only delayed."""
        return await self.link.retry(what, op, time.monotonic() + STALL_LIMIT)

    # --- appending -----------------------------------------------------------------------

    async def append(self, batch: Sequence[Publish]) -> list[Appended]:
        by_room: dict[bytes, list[int]] = {}
        for i, p in enumerate(batch):
            by_room.setdefault(p.room, []).append(i)
        results: list[Appended | None] = [None] * len(batch)
        fanout = self.fanout
        fanout.busy.update(by_room)
        try:
            deadline = time.monotonic() + STALL_LIMIT
            for room in by_room:
                if not fanout.tracking(room):  # start this node's fan-out at the head
                    await self.link.retry("a room's head", _fetching(fanout, room), deadline)
            alone = len(by_room) == 1
            outcomes = await _each(
                self.ownership.append(room, Items.of([batch[i] for i in idx]), alone=alone)
                for room, idx in by_room.items()
            )
            failure: BaseException | None = None
            for (room, idx), outcome in zip(by_room.items(), outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    self.journal.forget(room)
                    failure = failure or outcome
                    continue
                for i, res in zip(idx, outcome, strict=True):
                    results[i] = res
            if failure is not None:
                raise failure
            for room, idx in by_room.items():
                await fanout.interleave(room, idx, results)
        finally:
            fanout.busy.difference_update(by_room)
            loop = asyncio.get_running_loop()
            for room in by_room:
                # after the hub's dispatch of this batch (it runs right after we return)
                loop.call_soon(fanout.drain, room)
        return [r for r in results if r is not None]

    # --- reading -------------------------------------------------------------------------

    async def head(self, room: bytes) -> int:
        return await self._waiting("a room's head", _fetching(self.fanout, room))

    async def read_after(
        self, room: bytes, after: int, *, limit: int = 256, max_bytes: int = 4 * 2**20
    ) -> list[StoredMessage]:
        reader = self.fanout.reader
        page = await self._waiting(
            "a room's messages", lambda: reader.read(room, after, limit, max_bytes)
        )
        # A replay stops where this node's live fan-out stands: what follows reaches the
        # connection live, in order (the hub buffers it during the replay).
        cursor = self.fanout.cursor(room)
        if cursor is not None:
            page = [m for m in page if m.seq <= cursor]
        return page

    # --- retention and presence ------------------------------------------------------------

    async def expire(self, now: float) -> int:
        return await self.keeper.expire(now)

    async def set_presence(self, room: bytes, member: int, online: bool) -> None:
        self.presence.change(room, member, online)


async def _each(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
    """Run them at once, each one's result or exception in order (as gather with
    return_exceptions); one alone runs in this task, sparing a task and a turn of the
    loop (a commit for one room, the usual light-load case)."""
    todo = list(coros)
    if len(todo) == 1:
        try:
            return [await todo[0]]
        except Exception as err:
            return [err]
    return await asyncio.gather(*todo, return_exceptions=True)


def _fetching(fanout: Fanout, room: bytes) -> Callable[[], Awaitable[int]]:
    return lambda: fanout.fetch_head(room)
