"""One writer per room: who owns a room, and forwarding appends to it.

A room's owner is chosen by rendezvous hashing (room, node name) over the live nodes
(this one and those whose presence snapshots arrive) that hold the room, or over all of
them when none does: a room whose members all use one node is written there, with
nothing forwarded, and a room spread over nodes by one of them. A node stores the rooms
it owns itself (journal.py) and forwards its share of a commit for any other room to the owner
(`ghostline.append.<owner>`, request/reply, codec in forward.py): one extra NATS round
trip, and the owner stores it with whatever else waits for the room. The shares of one
commit for rooms of the same owner travel in one request, answered once. Neither side
adds a turn of the event loop it can spare: the request and the answer are written to
NATS at once (`Link.request`, `Link.publish_now`), and the owner's journal answers from
the round that stored the last share, right after JetStream's acknowledgement and
before the owner fans the messages out to its own connections. The owner stores
whatever is forwarded to it, without forwarding again, so nodes that briefly disagree
about the owner (one just started or died, or a room's holders changed and a snapshot
is on its way) merely race, which the journal resolves.

An owner that does not answer (no responders: it is gone from NATS; or no reply within
`FORWARD_TIMEOUT`) or says it is closing is passed over for `SUSPECT_FOR` seconds, and
the next one in line, perhaps this node, stores the rest; what the old owner stored
anyway comes back from the look-up with its stored seq. An owner killed while it held a
forward never answers it, and an answer may rightly take up to STALL_LIMIT (the owner
waiting out a NATS hiccup): so a forward unanswered after `PROBE_AFTER` seconds asks,
every `PROBE_AFTER` seconds, whether the owner is still on NATS
(`ghostline.alive.<owner>`, answered at once by a live node), and passes it over as soon
as nobody answers there.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.msg import Msg

from ..backend import Appended
from ..logfmt import log_event
from . import forward
from .forward import ForwardError, Reply
from .items import ENTRY_SIZE, Items
from .journal import Journal
from .layout import ALIVE_SUBJECT, APPEND_SUBJECT
from .link import RETRY_WAIT, STALL_LIMIT, Link, StorageUnavailable, transient
from .presence import DEAD_AFTER, Presence

log = logging.getLogger("ghostline.relay")

SUSPECT_FOR = DEAD_AFTER  # seconds an owner that did not answer a forward is passed over
# The owner answers after its JetStream write, which may wait out a NATS hiccup for up to
# STALL_LIMIT: wait as long (a dead owner answers "no responders" at once).
FORWARD_TIMEOUT = STALL_LIMIT + 1.0
PROBE_AFTER = 1.0  # seconds between looks at an owner that has not answered a forward yet


class _OwnerGone(Exception):
    """The room's owner did not answer a forwarded append (dead, cut off, closing)."""


@dataclass(slots=True)
class _Share:
    """One room's share of a commit, waiting to be forwarded to the room's owner."""

    room: bytes
    items: Items
    future: asyncio.Future[list[Appended]]


@dataclass(slots=True)
class _Answer:
    """The owner's answer to one forward request, filled in as its shares are stored."""

    msg: Msg
    replies: list[bytes]  # per room of the request, in order
    left: int  # rooms not settled yet


@dataclass(slots=True)
class _Wait:
    """One forward request's wait for its answer, as its watcher sees it."""

    over: bool = False  # answered, failed or given up: the watcher stops
    gone: bool = False  # the watcher found the owner gone and cancelled the wait


def _outcome(owner: str, reply: bytes, expected: int) -> list[Appended]:
    """A room's results from its reply in an owner's answer (or the error to raise)."""
    try:
        kind, results, reason = forward.decode_reply(reply, expected)
    except ForwardError as err:
        raise StorageUnavailable(f"node {owner} answered a forward wrongly: {err}") from err
    if kind is Reply.CLOSING:
        raise _OwnerGone(owner)
    if kind is Reply.FAILED:
        raise StorageUnavailable(f"node {owner} could not store: {reason}")
    return results


def score(room: bytes, node: str) -> tuple[bytes, str]:
    """A node's rendezvous score for a room: the highest score owns it."""
    return hashlib.blake2b(room + node.encode(), digest_size=8).digest(), node


class Ownership:
    def __init__(
        self,
        link: Link,
        presence: Presence,
        journal: Journal,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.link = link
        self.node = link.node
        self.presence = presence
        self.journal = journal
        self._spawn = spawn
        self._suspect: dict[str, float] = {}  # node -> until when it is not chosen as owner
        self._outbox: dict[str, list[_Share]] = {}  # per owner: shares to forward this turn

    def owner(self, room: bytes) -> str:
        """The node that writes `room`: the highest score among the live nodes that hold
        it (a connection there bound it), so a room whose members are all on one node is
        written there and nothing is forwarded; among all live nodes if none does. Nodes
        passed over for not answering are left out."""
        live = self._live()
        holding = [name for name in live if self.presence.holds(name, room)]
        return max(score(room, name) for name in holding or live)[1]

    def keeps(self, room: bytes) -> bool:
        """Whether this node retires `room` (registry.py): the highest score among all
        live nodes, whoever holds the room. Unlike the owner it stays put while holders
        come and go, so the node that retired a room is the one that hears of a hold
        that raced with the retirement, and makes the room live again."""
        return max(score(room, name) for name in self._live())[1] == self.node

    def _live(self) -> list[str]:
        """This node and the others alive, less those passed over for not answering."""
        now = time.monotonic()
        return [self.node, *(name for name in self.presence.nodes if self._fit(name, now))]

    def _fit(self, name: str, now: float) -> bool:
        until = self._suspect.get(name)
        if until is not None and until <= now:
            del self._suspect[name]
            until = None
        return until is None

    def owns(self, room: bytes) -> bool:
        return self.owner(room) == self.node

    async def append(self, room: bytes, items: Items, *, alone: bool = False) -> list[Appended]:
        """Store one room's share of a commit: here if this node owns the room, else by
        its owner (waiting out a NATS hiccup like the journal does). `alone`: the commit
        has no other room, so a forward goes out at once rather than waiting a turn of
        the loop for other rooms' shares."""
        out: list[Appended] = []
        deadline = time.monotonic() + STALL_LIMIT
        while len(out) < len(items):
            owner = self.owner(room)
            if owner == self.node:
                break
            part = self._part(items, len(out))
            if not len(part):
                break  # a message too big to forward: stored here
            try:
                out += await self._forward(owner, room, part, alone)
            except _OwnerGone as err:
                self._suspect[owner] = time.monotonic() + SUSPECT_FOR
                log_event(
                    log, "cluster_owner_gone", level=logging.WARNING, node=owner,
                    room=room.hex(), error=repr(err.__cause__ or err),
                )  # fmt: skip
            except Exception as err:
                if not transient(err) or self.link.closing or time.monotonic() >= deadline:
                    raise
                self.link.stalled("forwarding", err)
                await asyncio.sleep(RETRY_WAIT)
        self.link.resumed("forwarding")
        if len(out) < len(items):
            out += await self.journal.append(room, items.part(len(out), len(items)), local=True)
        return out

    def _part(self, items: Items, start: int) -> Items:
        """As many of the items from `start` on as one forward request may carry."""
        room_for = self._request_limit() - forward.SHARE_OVERHEAD
        if start == 0 and len(items.data) + ENTRY_SIZE * len(items) <= room_for:
            return items  # the usual share: whole
        size, end = 0, start
        while end < len(items):
            size += ENTRY_SIZE + items.sizes[end]
            if size > room_for:
                break
            end += 1
        return items.part(start, end)

    def _request_limit(self) -> int:
        return self.link.max_payload - 1024 - forward.REQUEST_OVERHEAD

    async def _forward(self, owner: str, room: bytes, items: Items, alone: bool) -> list[Appended]:
        """Store `items` of `room` by `owner`: queued with the other rooms' shares for the
        same owner from this turn of the event loop (the rooms of one commit, as
        `NatsBackend.append` starts them all at once), sent together (`_send_queued`,
        whose task first runs once every share of this turn is queued)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Appended]] = loop.create_future()
        if alone:
            try:
                await self._request(owner, [_Share(room, items, future)])
            finally:
                if future.done() and not future.cancelled():
                    future.exception()  # read, also when this task is cancelled
            return future.result()
        queued = self._outbox.get(owner)
        if queued is None:
            queued = self._outbox[owner] = []
            self._spawn(self._send_queued(owner))
        queued.append(_Share(room, items, future))
        return await future

    async def _send_queued(self, owner: str) -> None:
        """Send the shares queued for `owner`: one request, or more if they do not fit
        (all but the last in tasks of their own)."""
        shares = [s for s in self._outbox.pop(owner, []) if not s.future.done()]
        batch: list[_Share] = []
        split = False
        try:
            size, limit = 0, self._request_limit()
            for share in shares:  # each fits alone (`_part`)
                need = forward.SHARE_OVERHEAD + ENTRY_SIZE * len(share.items)
                need += len(share.items.data)
                if batch and (size + need > limit or len(batch) == forward.MAX_SHARES):
                    self._spawn(self._request(owner, batch))
                    batch, size, split = [], 0, True
                batch.append(share)
                size += need
        except Exception as err:  # fail them rather than leave them waiting
            for share in shares:
                if not share.future.done():
                    share.future.set_exception(err)
            return
        if batch:
            if split:
                await asyncio.sleep(0)  # the requests go out in order
            await self._request(owner, batch)

    async def _request(self, owner: str, shares: list[_Share]) -> None:
        """One forward request; each share's future gets its room's outcome."""
        try:
            replies = await self._ask(owner, [(s.room, s.items) for s in shares])
        except BaseException as err:
            for share in shares:
                if not share.future.done():
                    share.future.set_exception(
                        err
                        if isinstance(err, Exception)
                        else StorageUnavailable("the relay is closing")
                    )
            if not isinstance(err, Exception):
                raise
            return
        for share, data in zip(shares, replies, strict=True):
            if share.future.done():
                continue
            try:
                share.future.set_result(_outcome(owner, data, len(share.items)))
            except Exception as err:
                share.future.set_exception(err)

    async def _ask(self, owner: str, shares: list[tuple[bytes, Items]]) -> list[bytes]:
        """The owner's answer to one request. Awaited in this task (no task or timer of
        its own on the usual, quick path); a watcher started with it asks after
        PROBE_AFTER whether the owner is still there, and cancels the wait if not."""
        task = asyncio.current_task()
        assert task is not None
        state = _Wait()
        watch = asyncio.get_running_loop().call_later(
            PROBE_AFTER, lambda: self._spawn(self._watch(owner, task, state))
        )
        try:
            reply = await self.link.request(
                APPEND_SUBJECT + owner, forward.encode_request(shares), FORWARD_TIMEOUT
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as err:
            raise _OwnerGone(owner) from err
        except asyncio.CancelledError:
            if state.gone and task.cancelling() <= 1:  # cancelled by the watcher alone
                task.uncancel()
                raise _OwnerGone(f"{owner} left NATS before it answered") from None
            raise
        finally:
            watch.cancel()
            state.over = True  # the watcher, if it started, stops
        try:
            return forward.decode_replies(reply.data, len(shares))
        except ForwardError as err:
            raise StorageUnavailable(f"node {owner} answered a forward wrongly: {err}") from err

    async def _watch(self, owner: str, task: asyncio.Task[Any], state: _Wait) -> None:
        """Every PROBE_AFTER while `task` waits for `owner`'s answer: is the owner still
        on NATS? If not, cancel the wait (saying so in `state`)."""
        while not state.over:
            if not await self._alive(owner):
                if not state.over:
                    state.gone = True
                    task.cancel()
                return
            await asyncio.sleep(PROBE_AFTER)

    async def _alive(self, owner: str) -> bool:
        """Whether `owner` is still on NATS: False only when nobody answers for it."""
        nc, _ = self.link.connected()
        try:
            await nc.request(ALIVE_SUBJECT + owner, b"", timeout=PROBE_AFTER)
        except nats.errors.NoRespondersError:
            return False
        except nats.errors.TimeoutError:
            pass  # busy, or the link is: it may still answer the forward
        return True

    # --- the owner's side ----------------------------------------------------------------

    async def on_alive(self, msg: Msg) -> None:
        self._answer(msg, b"")

    async def on_forward(self, msg: Msg) -> None:
        """Store what another node forwarded (this node owns the rooms in its view, which
        is enough: the journal's head expectation guards every write), and answer once.
        NATS runs one callback at a time: the shares go to the journal here, so their
        rounds start at once, and the answer goes out from the round that stores the
        last of them, as soon as JetStream acknowledged it (`_settled`)."""
        try:
            shares = forward.decode_request(msg.data)
        except ForwardError as err:  # the forwarder hears no rooms answered and fails
            log_event(log, "cluster_forward_damaged", level=logging.WARNING, error=str(err))
            self._answer(msg, forward.encode_replies([]))
            return
        answer = _Answer(msg, [b""] * len(shares), len(shares))
        for i, (room, items) in enumerate(shares):
            self.journal.submit(
                room, items, local=False, then=functools.partial(self._settled, answer, i)
            )

    def _settled(self, answer: _Answer, index: int, stored: asyncio.Future[list[Appended]]) -> None:
        """One forwarded room's share is stored (or failed): its reply; the answer goes
        out with the last of them."""
        if stored.cancelled() or stored.exception() is not None:
            err = None if stored.cancelled() else stored.exception()
            closing = self.link.closing or self.journal.closing or err is None
            reply = forward.encode_closing() if closing else forward.encode_failed(repr(err))
        else:
            reply = forward.encode_stored(stored.result())
        answer.replies[index] = reply
        answer.left -= 1
        if not answer.left:
            self._answer(answer.msg, forward.encode_replies(answer.replies))

    def _answer(self, msg: Msg, data: bytes) -> None:
        try:
            if not msg.reply:
                raise ValueError("the forward came without a reply subject")
            self.link.publish_now(msg.reply, data)
        except Exception as err:  # the forwarder times out and asks the next owner
            log_event(log, "cluster_reply_unsent", level=logging.WARNING, error=repr(err))
