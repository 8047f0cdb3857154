"""The rooms this node hosts: only their chunks are sent to it.

A room is hosted while a connection here holds it (`bind_roster` until `release`: the
holds registry.py counts, its relay and presence connections and their publishes until
answered; the backend asks it whether any is left). Only then is this node subscribed
to the room's live subject (`ghostline.live.<room hex>`, where JetStream republishes
every chunk stored), so a chunk another node stores reaches just the nodes hosting its
room, and a node's receive work (a wake-up, a read and nats-py's per-message path for
each chunk) follows the rooms it hosts, not the cluster's traffic. When the last hold
goes, the subscription and the room's fan-out state (fanout.py) go with it.

`hold` returns once nats-server has the subscription, so the head a joining member reads
next (`Fanout.fetch_head`, from the stream's leader) bounds what it is replayed, and
every chunk stored after comes live; one that comes before the head was read is filled
from the stream (`Fanout.seen_head`), and so is one that a NATS cluster stored while the
subscription was still on its way between its servers (`_look_again`). nats-py's
`flush()` writes its PING at once, ahead of a SUB its flusher task has not written yet:
one flush gives that task its turn, the second's PONG comes after the server took the
SUB. The joins of many rooms share these round trips: a join waits for the next pair
of flushes to start after its SUB was queued (`_synced`), so a burst of joins costs a
few round trips in all, not two per room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.subscription import Subscription

from ..logfmt import log_event
from .fanout import Fanout
from .layout import LIVE_SUBJECT
from .link import STALL_LIMIT, Link, StorageUnavailable

log = logging.getLogger("ghostline.relay")

PENDING_MSGS = 1_000_000  # what a subscription may hold before NATS calls us slow
PENDING_BYTES = 1 << 30
LOOK_AGAIN = 1.0  # seconds after a room's subscription: one more look at its head


class Hosting:
    def __init__(
        self, link: Link, fanout: Fanout, spawn: Callable[[Coroutine[Any, Any, None]], None]
    ) -> None:
        self.link = link
        self.fanout = fanout
        self._spawn = spawn
        self._subs: dict[bytes, asyncio.Future[Subscription]] = {}
        self._next_round: list[asyncio.Future[None]] = []  # joins waiting for a sync
        self._syncing = False

    async def hold(self, room: bytes) -> None:
        """A connection here holds `room`; when this returns, nats-server sends this
        node every chunk of the room stored from now on. On failure the caller lets the
        hold go (`drop` once no other is left)."""
        self.fanout.hosted.add(room)
        await self.link.retry(
            "a room's live messages", lambda: self._subscribed(room),
            time.monotonic() + STALL_LIMIT,
        )  # fmt: skip

    async def _subscribed(self, room: bytes) -> None:
        # (shielded: a join cancelled meanwhile leaves the subscribe to the others, or
        # to `drop`, which undoes it once made)
        await asyncio.shield(self._subscription(room))
        await self._synced()

    def _subscription(self, room: bytes) -> asyncio.Future[Subscription]:
        """The room's one subscription, made or on its way: recorded before nats-py's
        subscribe runs, so joins that overlap it (if it ever gives the loop a turn) share
        it rather than each adding one. One that failed is tried again."""
        sub = self._subs.get(room)
        if sub is None or (sub.done() and (sub.cancelled() or sub.exception() is not None)):
            nc, _ = self.link.connected()
            self._spawn(self._look_again(room))
            sub = self._subs[room] = asyncio.ensure_future(
                nc.subscribe(
                    LIVE_SUBJECT + room.hex(), cb=self.fanout.on_live,
                    pending_msgs_limit=PENDING_MSGS, pending_bytes_limit=PENDING_BYTES,
                )
            )  # fmt: skip
            sub.add_done_callback(_seen)
        return sub

    async def _look_again(self, room: bytes) -> None:
        """On a NATS cluster the subscription may reach the server that republishes the
        room's chunks a moment after the one this node is connected to: a chunk stored
        in that moment, in a room that then goes quiet, would wait for the next one.
        One more look at the head, once that moment is surely over, fills it."""
        await asyncio.sleep(LOOK_AGAIN)
        if room in self.fanout.hosted and self.fanout.tracking(room):
            await self.fanout.catch_up(room)  # (logs a failure; the next chunk fills)

    def drop(self, room: bytes) -> None:
        """No connection here holds `room` any more: its hosting ends."""
        self.fanout.forget(room)
        sub = self._subs.pop(room, None)
        if sub is not None and not self.link.closing:  # (closing: the connection goes)
            self._spawn(self._unsubscribe(room, sub))

    async def _unsubscribe(self, room: bytes, pending: asyncio.Future[Subscription]) -> None:
        try:
            sub = await pending
        except Exception:  # never made: nothing to undo
            return
        try:
            await sub.unsubscribe()
        except Exception as err:  # its chunks still come, and are dropped (`Fanout.on_live`)
            if not self.link.closing:
                log_event(log, "cluster_unsubscribe_failed", level=logging.WARNING,
                          room=room.hex(), error=repr(err))  # fmt: skip

    async def _synced(self) -> None:
        """Wait for a pair of flushes that started after this call (see the top)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next_round.append(waiter)
        if not self._syncing:
            self._syncing = True
            self._spawn(self._sync_rounds())
        await waiter

    async def _sync_rounds(self) -> None:
        waiters: list[asyncio.Future[None]] = []
        try:
            while self._next_round:
                waiters, self._next_round = self._next_round, []
                error: Exception | None = None
                try:
                    nc, _ = self.link.connected()
                    await nc.flush()
                    await nc.flush()
                except Exception as err:  # each join's retry decides: wait, or fail it
                    error = err
                _settle(waiters, error)
                waiters = []
        finally:
            self._syncing = False
            # (cancelled: the node is closing) no join is left waiting for nothing
            _settle(waiters + self._next_round, StorageUnavailable("the relay is closing"))
            self._next_round = []


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


def _seen(sub: asyncio.Future[Subscription]) -> None:
    """A failed subscribe is reported to the joins awaiting it (and retried); one that
    failed after every join went is not a loose "never retrieved" exception."""
    if not sub.cancelled():
        sub.exception()
