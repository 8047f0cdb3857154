"""Storing on a room's owner: one chunk per room per round.

Appends for the rooms this node owns (its own commits and those other nodes forward)
wait per room. A room has one round under way at a time, which takes everything
waiting for it: the new messages become ONE chunk (chunks.py), chained to the room's
last chunk by `Nats-Expected-Last-Subject-Sequence`. Rounds of different rooms run at
once: those started in one turn of the event loop, for any rooms of any streams, go out
together (pipelined in one write to NATS), and streams commit them in parallel. What
arrives for a room meanwhile waits for its next round, so a busy room carries more per
chunk instead of more chunks.

Seqs are gap-free: a chunk's messages take head + 1, + 2, ... and JetStream stores it
only if the room's last chunk is still the one the seqs were counted from. A round that
loses that race (ownership just changed hands) re-reads the room's last chunk from the
leader and counts again; what the other writer stored of the same messages is then
found by the look-up (dedupe.py) and answered with its stored seq. While NATS or a
stream's leader is away, a round waits and tries again (link.retry) for up to
`STALL_LIMIT` seconds; an unanswered write is tried again with the same expectation, so
it is stored once (its write id tells a late acknowledgement of our own write from a
race lost).

It stays one file, a little over 400 lines: a round is one sequence (count, write, hand
over, answer), and its steps read best beside each other.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.js.errors import APIError

from ..backend import Appended, StoredMessage
from ..config import Retention
from ..stopping import stop
from . import chunks
from .dedupe import Key, Lookup, encode_receipt
from .items import Items, join
from .layout import Layout
from .link import RETRY_WAIT, STALL_LIMIT, Link, StorageUnavailable, transient
from .paging import Reader, Stored

log = logging.getLogger("ghostline.relay")

H_EXPECT = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071  # JetStream err_code: another write came first
MAX_RACES = 100  # lost races in a row for one room before its appends fail
CHUNK_MARGIN = 64 * 1024  # room left in a NATS message for the chunk's own index

OnStored = Callable[[bytes, list[StoredMessage]], None]
Settled = Callable[[asyncio.Future[list[Appended]]], None]
_NEW = tuple.__new__  # an Appended per message, without its constructor's frame


@dataclass(slots=True)
class _Waiter:
    """One caller's messages for one room, stored in order over one or more rounds."""

    items: Items
    local: bool  # from this node's hub (which fans them out itself), not forwarded
    future: asyncio.Future[list[Appended]]
    deadline: float
    then: Settled | None  # called at once when the future is settled
    results: list[Appended] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.items)

    def settle(self, error: BaseException | None = None) -> None:
        """Settle the future: with the results, else with `error`; then `then`."""
        if self.future.done():
            return
        if error is None:
            self.future.set_result(self.results)
        else:
            self.future.set_exception(error)
        if self.then is not None:
            self.then(self.future)


class Journal:
    def __init__(
        self, link: Link, layout: Layout, reader: Reader, retention: Retention,
        on_stored: OnStored, after_store: Callable[[bytes, Stored], None],
    ) -> None:  # fmt: skip
        self.link = link
        self.layout = layout
        self.reader = reader
        self.retention = retention
        self._on_stored = on_stored
        self._after_store = after_store
        self._heads: dict[bytes, Stored] = {}  # per room: its last chunk, as last known here
        self._unsure: dict[bytes, bytes] = {}  # per room: write id of an unanswered write
        self._races: dict[bytes, int] = {}
        self._waiting: dict[bytes, list[_Waiter]] = {}  # per room: for its next round
        self._rounds: dict[bytes, asyncio.Task[None]] = {}  # per room: its round under way
        self._closing = False
        self._write_ids = itertools.count(1)
        # starts every write id of this process: its fan-out knows its own chunks by it
        self.writer = os.urandom(chunks.WRITER_LEN)

    def forget(self, room: bytes | None = None) -> None:
        """Drop what this node knows of a room's head (all rooms: None); the next write
        reads it from the leader."""
        if room is None:
            self._heads.clear()
        else:
            self._heads.pop(room, None)

    async def append(self, room: bytes, items: Items, *, local: bool) -> list[Appended]:
        """Store `items` (all for `room`, which this node owns) in the room's next round."""
        return await self.submit(room, items, local=local)

    def submit(
        self, room: bytes, items: Items, *, local: bool, then: Settled | None = None
    ) -> asyncio.Future[list[Appended]]:
        """`append` without waiting: the room's round starts now if none is under way;
        the future gets the results, and `then(future)` is called as soon as it has them
        (in the round itself, without a turn of the loop: a forwarded share's answer goes
        out before this node fans the share out to its own connections)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + STALL_LIMIT
        waiter = _Waiter(items, local, loop.create_future(), deadline, then)
        if self._closing:  # no more rounds: a forwarder asks the next owner
            waiter.settle(StorageUnavailable("the relay is closing"))
            return waiter.future
        self._waiting.setdefault(room, []).append(waiter)
        self._kick(room)
        return waiter.future

    @property
    def closing(self) -> bool:
        return self._closing

    async def close(self) -> None:
        self._closing = True
        rounds = list(self._rounds.values())
        for task in rounds:
            task.cancel()
        for task in rounds:
            await stop(task)  # (a round's own failure is its waiters', see `_round`)
        for waiters in self._waiting.values():
            _fail(waiters, StorageUnavailable("the relay is closing"))
        self._waiting.clear()

    def _kick(self, room: bytes) -> None:
        """Start the room's next round unless one is under way (it kicks when done)."""
        if room in self._rounds or room not in self._waiting:
            return
        waiters = self._waiting.pop(room)
        self._rounds[room] = asyncio.ensure_future(self._round(room, waiters))

    async def _round(self, room: bytes, waiters: list[_Waiter]) -> None:
        """One round for one room. Rounds of different rooms run at once; those started
        in one turn of the event loop go out together (one write to NATS)."""
        try:
            outcome: Exception | None = None
            try:
                await self._store_room(room, waiters)
            except Exception as err:
                outcome = err
            left = self._settle(room, waiters, outcome)
            if left:
                if outcome is not None:  # NATS or the stream's leader is away: wait a little
                    await asyncio.sleep(RETRY_WAIT)
                self._waiting[room] = left + self._waiting.get(room, [])
            elif outcome is None:
                self.link.resumed(f"stream {self.layout.stream(room)}")
        except asyncio.CancelledError:  # closing
            _fail(waiters, StorageUnavailable("the relay is closing"))
            raise
        finally:
            del self._rounds[room]
            if not self._closing:
                self._kick(room)

    def _settle(
        self, room: bytes, waiters: list[_Waiter], outcome: BaseException | None
    ) -> list[_Waiter]:
        """Finish the waiters of a round that are done; returns those left for the next."""
        left = []
        now = time.monotonic()
        for w in waiters:
            if w.future.done():
                continue
            if len(w.results) == len(w.items):
                w.settle()
            elif outcome is not None and not _worth_waiting(outcome, now, w.deadline):
                w.settle(
                    outcome
                    if isinstance(outcome, Exception) and not transient(outcome)
                    else StorageUnavailable(f"storage unavailable: {outcome!r}")
                )
            else:
                left.append(w)
        if outcome is not None and left and transient(outcome):
            self.link.stalled(f"stream {self.layout.stream(room)}", outcome)
        return left

    async def _head(self, room: bytes) -> Stored | None:
        head = self._heads.get(room)
        if head is None:
            head = await self.reader.get(room)
            if head is not None:
                self._heads[room] = head
        return head

    async def _store_room(self, room: bytes, waiters: list[_Waiter]) -> None:
        """One round for one room: at most one chunk. Raises what stopped it (the
        waiters keep what was stored)."""
        head = await self._head(room)
        tops = dict(head.chunk.tops) if head is not None else {}
        parts = [w.items.part(len(w.results), len(w.items)) for w in waiters if not w.done]
        if not parts:
            return
        whole = join(parts)
        late: list[tuple[Key, int]] = []
        outcomes: list[Appended] | None = None
        if _in_order(whole, tops) and len(whole.data) <= self._chunk_bytes():
            new = whole  # the usual round: all new, in order, one chunk
        else:
            new, late, outcomes = await self._sort(room, head, whole, tops)
        stored = None
        handed: list[StoredMessage] | None = None
        if len(new):
            stored = await self._write(room, head, new, tops, late)
            if stored is None:
                return  # lost a race: the next round counts again
            if outcomes is None:  # the usual round: all new, numbered in the waiters' order
                first = stored.chunk.first
                outcomes = [_NEW(Appended, (s, False, ())) for s in range(first, first + len(new))]
                handed = _forwarded_run(waiters, first)
        assert outcomes is not None  # from the write, or the look-up found all stored
        if handed is None:
            handed = _forwarded(waiters, outcomes)
        at = 0
        for w in waiters:
            if at >= len(outcomes):
                break
            take = outcomes[at : at + len(w.items) - len(w.results)]
            w.results += take
            at += len(take)
            if w.done and not w.local:
                w.settle()  # its answer goes out first: the other node's member waits
        if handed:  # before any local waiter hears back (settled after this round)
            self._on_stored(room, handed)
        if stored is not None:
            self._after_store(room, stored)

    async def _sort(
        self, room: bytes, head: Stored | None, whole: Items, tops: dict[int, int]
    ) -> tuple[Items, list[tuple[Key, int]], list[Appended]]:
        """The slow round: look up what the room may hold already (counters at or below
        their sender's top), answer duplicates with their stored seqs, and take the rest
        in order, up to one chunk's worth. Returns (new items, late ones with their
        seqs, one outcome per item decided)."""
        keys = [whole.key(i) for i in range(len(whole))]
        doubtful = sorted({k for k in keys if k[1] <= tops.get(k[0], -1)})
        held: dict[Key, int] = {}
        if doubtful and head is not None:
            held = await Lookup(self.reader, room).held(head, doubtful, self.retention)
        mine = self._unsure.pop(room, None)
        ours = head is not None and mine is not None and head.chunk.write_id == mine
        last = head.chunk.last if head is not None else 0
        limit = self._chunk_bytes()
        take: list[int] = []
        late: list[tuple[Key, int]] = []
        seq_of: dict[Key, int] = {}
        outcomes: list[Appended] = []
        size = 0
        for i, key in enumerate(keys):
            if key in held:
                in_head = head is not None and head.chunk.first <= held[key]
                outcomes.append(Appended(held[key], not (ours and in_head)))
            elif key in seq_of:
                outcomes.append(Appended(seq_of[key], True))
            else:
                n = whole.sizes[i]
                if take and size + n > limit:
                    break
                if n > limit:
                    raise StorageUnavailable("a message is larger than NATS carries (max_payload)")
                seq = last + len(take) + 1
                if key[1] <= tops.get(key[0], -1):
                    late.append((key, seq))
                take.append(i)
                seq_of[key] = seq
                size += n
                outcomes.append(Appended(seq, False))
        new = join([whole.part(i, i + 1) for i in take]) if take else chunks.EMPTY
        return new, late, outcomes

    def _chunk_bytes(self) -> int:
        return max(self.link.max_payload - CHUNK_MARGIN, 1024)

    async def _write(
        self,
        room: bytes,
        head: Stored | None,
        new: Items,
        tops: dict[int, int],
        late: list[tuple[Key, int]],
    ) -> Stored | None:
        """Store one chunk; None if another write came first (the head is re-read)."""
        self.link.connected()  # (raises while NATS is away: nothing built for nothing)
        stream = self.layout.stream(room)
        last = head.chunk.last if head is not None else 0
        total = (head.chunk.total if head is not None else 0) + len(new.data)
        for s, c in zip(new.senders, new.counters, strict=True):
            if c > tops.get(s, -1):
                tops[s] = c
        write_id = self.writer + (next(self._write_ids) & 0xFFFFFFFF).to_bytes(4, "big")
        body, chunk = chunks.build(last + len(new), total, tops, new, write_id, self.link.node)
        if late:  # receipts first: a receipt without its chunk is harmless, not the reverse
            prefix = self.layout.late_prefix(room)
            replies = await asyncio.gather(
                *(
                    self.link.js_request(stream, f"{prefix}{s}.{c}", encode_receipt(seq))
                    for (s, c), seq in late
                )
            )
            for reply in replies:
                _ack(reply.data)
        expect = str(head.sseq if head is not None else 0)
        self._unsure[room] = write_id
        try:
            reply = await self.link.js_request(
                stream, self.layout.room_subject(room), body, headers={H_EXPECT: expect}
            )
        except Exception:
            self._heads.pop(room, None)  # unanswered: the next round reads the head
            raise
        try:
            sseq = _ack(reply.data)
        except APIError as err:
            self._unsure.pop(room, None)
            self._heads.pop(room, None)
            if err.err_code != WRONG_LAST_SEQUENCE:
                raise
            races = self._races[room] = self._races.get(room, 0) + 1
            if races > MAX_RACES:
                self._races.pop(room, None)
                raise StorageUnavailable("the room is too contended, retry later") from err
            return None
        self._unsure.pop(room, None)
        self._races.pop(room, None)
        stored = Stored(sseq, chunk, time.time())
        self._heads[room] = stored
        return stored


def _forwarded(waiters: list[_Waiter], outcomes: list[Appended]) -> list[StoredMessage]:
    """The messages of this round that other nodes forwarded, newly stored, by seq: this
    node's fan-out gets them from the journal (it does not decode the republished chunks
    this node wrote; its own hub fans out its own messages when `append` returns)."""
    handed: list[StoredMessage] = []
    if all(w.local for w in waiters):
        return handed
    at = 0
    for w in waiters:
        done = len(w.results)
        take = outcomes[at : at + len(w.items) - done]
        if not w.local:
            handed += [
                _NEW(StoredMessage, (r.seq, w.items.sealed(done + j)))
                for j, r in enumerate(take)
                if not r.duplicate
            ]
        at += len(take)
    handed.sort()
    return handed


def _forwarded_run(waiters: list[_Waiter], first: int) -> list[StoredMessage]:
    """`_forwarded` for the usual round, whose messages are all new and hold seqs first,
    first + 1, ... in the waiters' order: each forwarded waiter's share as one run."""
    handed: list[StoredMessage] = []
    if all(w.local for w in waiters):
        return handed
    seq = first
    for w in waiters:
        done = len(w.results)
        count = len(w.items) - done
        if not w.local and count:
            handed += w.items.part(done, len(w.items)).messages(seq)
        seq += count
    return handed


def _in_order(items: Items, tops: dict[int, int]) -> bool:
    """Whether every message is above its sender's top (in order, so new), counting the
    ones before it: then a round needs no look-up."""
    running = dict(tops)
    for s, c in zip(items.senders, items.counters, strict=True):
        if c <= running.get(s, -1):
            return False
        running[s] = c
    return True


def _fail(waiters: list[_Waiter], err: Exception) -> None:
    for w in waiters:
        w.settle(err)


def _ack(data: bytes) -> int:
    """The stream seq of a JetStream publish acknowledgement; raises its APIError."""
    resp = json.loads(data)
    if "error" in resp:
        raise APIError.from_error(resp["error"])
    return int(resp["seq"])


def _worth_waiting(err: BaseException, now: float, deadline: float) -> bool:
    return transient(err) and now < deadline
