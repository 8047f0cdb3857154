"""The cluster backend: several relay nodes share their rooms through NATS JetStream.

Layout in NATS (every name starts with `ghostline`):

- Stream `GHOSTLINE`, subjects `ghostline.room.<room hex>`: one stream message per
  stored relay message, body = the sealed bytes, headers `Gl-Seq` = the room's seq and
  `Gl-Total` = the room's running byte total including this message. The stream
  republishes every stored room message to `ghostline.live.<room hex>`: that is how the
  other nodes fan it out.
- Same stream, subjects `ghostline.sent.<room hex>.<sender>.<counter>`: the receipt of
  each stored message (no body, `Gl-Seq`), stored atomically with it.
- Retention per room: count (`max_msgs_per_subject`, enforced by JetStream), bytes
  (applied after each append from `Gl-Total`, never removing the newest message) and
  age (applied by `expire`, which keeps a body-less `Gl-Marker` message in a room it
  empties, so the room's numbering survives). Receipts go with their messages (a
  purge below the same stream seq; for the count limit, in the next `expire`).
- KV bucket `ghostline-rooms`: room hex -> roster (created once, never changed).
- KV bucket `ghostline-cluster`: `store-id` -> the 16 random bytes WELCOME carries,
  made by the first node that finds none (created once, never changed), so every node
  of the cluster names the same store.
- Core subjects `ghostline.presence.<node>` (each node's online members, as a full
  snapshot on every change and every `HEARTBEAT` seconds) and `ghostline.presence-sync`.
- Core subject `ghostline.append.<node>`: appends forwarded to the node that owns a room.

One writer per room: a room's owner is chosen by rendezvous hashing (room, node name)
over the live nodes (this one and those whose presence snapshots arrive). A node
forwards its share of a commit for a room it does not own to the owner (request/reply,
`_ITEM` records); the owner stores it, together with whatever else waits for the room
(its own commits, other forwards: one run at a time per room), and replies with each
message's (seq, duplicate) once JetStream acknowledged. A node stores whatever is
forwarded to it, without forwarding again, so nodes that briefly disagree about the
owner (one just started or died) merely race, as below. An owner that does not answer
(no responders, timeout) is passed over for `SUSPECT_FOR` seconds and the next one in
line, perhaps the forwarder itself, stores the rest; what the old owner stored anyway
comes back as a duplicate with its stored seq, by its receipt.

Appending: each run of a room's appends on its owner is ONE atomic JetStream batch
(ADR-50, `allow_atomic`; chunks of `BATCH_MAX`): per message the room message (`Gl-Seq`
= head + 1, + 2, ...) and its receipt. The first room message carries
`Nats-Expected-Last-Subject-Sequence` = the stream seq of the room's last message (so
of two nodes racing for the same seqs exactly one batch is stored), and every receipt
expects its subject to be empty (so a message the room already holds fails the batch).
Either way (a race is rare with one writer per room) the whole batch is refused; the
node re-reads the room's head, looks the batch's receipts up (one direct get,
`multi_last`), answers the ones found with their stored seqs (`duplicate=True`), and
retries the rest. Dedupe is therefore exact for as long as the original is held,
independent of JetStream's duplicate window (not used).

Order of DELIVERs on a node: a per-room cursor (the highest seq this node's hub has
fanned out). Republished messages are delivered when they are next in line; a gap
(a missed republish) is filled from the stream after `GAP_WAIT`. While this node is
appending to a room, other nodes' messages for it are held and handed to the hub with
the local results (`Appended.preceded_by`), so no connection ever sees seqs go back.

Presence: a member is online while some node's latest snapshot lists it; a node that
stops sending (dies, or loses NATS) is forgotten `DEAD_AFTER` seconds after its last
snapshot, checked every second: its members go offline within DEAD_AFTER + 1 s.

NATS outage: appends fail at once while the connection is down (`StorageUnavailable`,
the relay answers ERROR 9 and closes; clients reconnect and resend their outbox); the
client library reconnects forever, and on reconnect the node re-announces its presence
and re-checks the rooms it serves for messages it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RePublish,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from ..errors import LocalError, UsageError
from ..protocol.frames import STORE_ID_LEN
from .backend import Appended, Backend, Publish, RelayHub, RoomLimitReached, Roster, StoredMessage
from .config import Retention
from .logfmt import log_event

log = logging.getLogger("ghostline.relay")

STREAM = "GHOSTLINE"
ROOM_SUBJECT = "ghostline.room."
LIVE_SUBJECT = "ghostline.live."
ROOMS_BUCKET = "ghostline-rooms"
CLUSTER_BUCKET = "ghostline-cluster"  # facts about the cluster itself: its store id
STORE_ID_KEY = "store-id"
PRESENCE_SUBJECT = "ghostline.presence."
SYNC_SUBJECT = "ghostline.presence-sync"
SENT_SUBJECT = "ghostline.sent."
APPEND_SUBJECT = "ghostline.append."

H_SEQ = "Gl-Seq"
H_NODE = "Gl-Node"
H_MARKER = "Gl-Marker"
H_EXPECT = "Nats-Expected-Last-Subject-Sequence"
H_TOTAL = "Gl-Total"
H_BATCH_ID = "Nats-Batch-Id"
H_BATCH_SEQ = "Nats-Batch-Sequence"
H_COMMIT = "Nats-Batch-Commit"
WRONG_LAST_SEQUENCE = 10071  # JetStream err_code
BATCH_WRONG_LAST_SEQUENCE = 10164
STREAM_NAME_IN_USE = 10058

HEARTBEAT = 2.0  # seconds between presence snapshots of a node
DEAD_AFTER = 8.0  # a node not heard from for this long is gone (its members offline)
GAP_WAIT = 0.1  # seconds a missing seq may take to arrive before it is read from the stream
MAX_RACES = 1000  # lost optimistic-concurrency races in a row before an append gives up
BATCH_MAX = 500  # messages per atomic batch (each with its receipt: JetStream allows 1000)
BATCHES_IN_FLIGHT = 12  # per node (JetStream allows 50 per stream in flight)
LOOKUP_MAX = 256  # receipts per lookup request
SUSPECT_FOR = DEAD_AFTER  # seconds an owner that did not answer a forward is passed over

_U16 = struct.Struct(">H")
_ITEM = struct.Struct(">IQI")  # forwarded publish: sender, counter, length of the sealed bytes
_RESULT = struct.Struct(">QB")  # forwarded result: seq, duplicate


class StorageUnavailable(LocalError):
    """The cluster's storage (NATS JetStream) cannot be reached right now: retry later."""


class _OwnerGone(Exception):
    """The room's owner did not answer a forwarded append (dead, or cut off)."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    servers: tuple[str, ...]
    node: str
    replicas: int = 1  # JetStream replicas of the stream and bucket (3 on a 3-server cluster)
    duplicate_window: float = 120.0  # JetStream's own window (unused: receipts dedupe)
    request_timeout: float = 5.0
    tls: Any = None  # ssl.SSLContext for tls:// servers with a private CA


@dataclass(frozen=True, slots=True)
class _Head:
    seq: int  # the room's newest Gl-Seq (0: none)
    sseq: int  # the stream seq of the room's last stream message (0: none)
    total: int = 0  # the room's running byte total (Gl-Total of its last message)


@dataclass(slots=True)
class _Fan:
    """What this node's hub has delivered of one room, and what waits in line."""

    cursor: int
    known: int = 0  # the highest seq of the room seen stored (head, live message)
    pending: dict[int, bytes] = field(default_factory=dict)
    filling: bool = False


@dataclass(slots=True)
class _Node:
    seen: float
    rooms: dict[bytes, frozenset[int]]


@dataclass(slots=True)
class _Queue:
    """Appends waiting for one room on its owner: each run stores them all as one."""

    waiting: list[tuple[list[Publish], asyncio.Future[list[Appended]]]] = field(
        default_factory=list
    )


def _subject(room: bytes) -> str:
    return ROOM_SUBJECT + room.hex()


class NatsBackend(Backend):
    def __init__(self, config: ClusterConfig, retention: Retention | None = None) -> None:
        self.config = config
        self.node = config.node
        self.retention = retention or Retention()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._rooms_kv: KeyValue | None = None
        self._hub: RelayHub | None = None
        self._rosters: dict[bytes, Roster] = {}
        self._heads: dict[bytes, _Head] = {}  # this node's last known head per room
        self._fans: dict[bytes, _Fan] = {}
        self._busy: set[bytes] = set()  # rooms this node is appending to right now
        # per room: (stream seq, running bytes before it) of its first held message
        self._firsts: dict[bytes, tuple[int, int]] = {}
        self._batch_slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        self._receipts_from: dict[bytes, int] = {}  # per room: receipts purged below this
        self._local: dict[bytes, set[int]] = {}  # members online through this node
        self._nodes: dict[str, _Node] = {}  # other nodes' presence snapshots
        self._queues: dict[bytes, _Queue] = {}  # rooms this node is storing for right now
        self._suspect: dict[str, float] = {}  # node -> until when it is not chosen as owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._snapshot_due = False
        self._closing = False

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self, hub: RelayHub) -> None:
        self._hub = hub
        try:
            nc = await nats.connect(
                servers=list(self.config.servers),
                name=f"ghostline-relay {self.node}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                allow_reconnect=True,
                tls=self.config.tls,
                disconnected_cb=self._disconnected,
                reconnected_cb=self._reconnected,
                error_cb=self._error,
                closed_cb=self._closed,
            )
        except Exception as err:
            raise StorageUnavailable(
                f"cannot reach NATS at {','.join(self.config.servers)}: {err}"
            ) from err
        self._nc = nc
        self._js = nc.jetstream(timeout=self.config.request_timeout)
        await self._ensure_stream()
        self._rooms_kv = await self._js.create_key_value(
            KeyValueConfig(
                bucket=ROOMS_BUCKET,
                history=1,
                storage=StorageType.FILE,
                replicas=self.config.replicas,
            )
        )
        self.store_id = await self._store_identity()
        for subject, cb in (
            (LIVE_SUBJECT + "*", self._on_live),
            (PRESENCE_SUBJECT + "*", self._on_presence),
        ):
            await nc.subscribe(
                subject, cb=cb, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30
            )
        await nc.subscribe(SYNC_SUBJECT, cb=self._on_sync)
        await nc.subscribe(
            APPEND_SUBJECT + self.node,
            cb=self._on_append,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=1 << 30,
        )
        await nc.publish(SYNC_SUBJECT, self.node.encode())
        self._spawn(self._heartbeat())
        # Debug only: the first stderr lines belong to the port lines (docs/DEPLOYMENT.md),
        # and `ghostline relay: cluster URLS node NAME` says the same thing right after.
        log_event(
            log,
            "cluster_open",
            level=logging.DEBUG,
            node=self.node,
            servers=",".join(self.config.servers),
        )

    async def _store_identity(self) -> bytes:
        """The cluster's store id: read it, or make it when this is a new cluster."""
        assert self._js is not None
        kv = await self._js.create_key_value(
            KeyValueConfig(
                bucket=CLUSTER_BUCKET,
                history=1,
                storage=StorageType.FILE,
                replicas=self.config.replicas,
            )
        )
        with contextlib.suppress(KeyWrongLastSequenceError):  # another node made it first
            await kv.create(STORE_ID_KEY, os.urandom(STORE_ID_LEN))
        value = (await kv.get(STORE_ID_KEY)).value or b""
        if len(value) != STORE_ID_LEN:
            raise StorageUnavailable(f"the cluster's store id in NATS is damaged ({value!r})")
        return bytes(value)

    async def _ensure_stream(self) -> None:
        assert self._js is not None
        config = StreamConfig(
            name=STREAM,
            subjects=[ROOM_SUBJECT + "*", SENT_SUBJECT + ">"],
            storage=StorageType.FILE,
            num_replicas=self.config.replicas,
            max_msgs_per_subject=self.retention.max_messages,
            discard=DiscardPolicy.OLD,
            duplicate_window=self.config.duplicate_window,
            allow_direct=True,
            allow_atomic=True,
            republish=RePublish(src=ROOM_SUBJECT + "*", dest=LIVE_SUBJECT + "{{wildcard(1)}}"),
        )
        try:
            await self._js.add_stream(config)
        except BadRequestError as err:
            if err.err_code != STREAM_NAME_IN_USE:
                raise
            await self._js.update_stream(config)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        nc = self._nc
        if nc is not None and nc.is_connected:
            with contextlib.suppress(Exception):
                await nc.publish(PRESENCE_SUBJECT + self.node, b"")  # goodbye: nobody here
                await nc.flush(1)
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        self._nc = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _connected(self) -> tuple[NatsClient, JetStreamContext]:
        nc, js = self._nc, self._js
        if nc is None or js is None or not nc.is_connected:
            raise StorageUnavailable("storage unavailable (NATS unreachable), retry later")
        return nc, js

    # --- NATS connection events --------------------------------------------------------

    async def _disconnected(self) -> None:
        if not self._closing:
            log_event(log, "nats_disconnected", level=logging.WARNING, node=self.node)

    async def _reconnected(self) -> None:
        log_event(log, "nats_reconnected", node=self.node)
        self._heads.clear()  # appends may have landed that we never saw acknowledged
        now = time.monotonic()
        for other in self._nodes.values():
            other.seen = now  # nobody could send while we could not hear: start afresh
        self._schedule_snapshot()
        with contextlib.suppress(Exception):
            if self._nc is not None:
                await self._nc.publish(SYNC_SUBJECT, self.node.encode())
        behind = {room for room, fan in self._fans.items() if fan.known > fan.cursor}
        for room in behind | set(self._local):
            self._spawn(self._catch_up(room))

    async def _error(self, err: Exception) -> None:
        log_event(log, "nats_error", level=logging.WARNING, node=self.node, error=repr(err))
        if "slow consumer" in str(err).lower():
            for room in list(self._local):
                self._spawn(self._catch_up(room))

    async def _closed(self) -> None:
        if not self._closing:
            log_event(log, "nats_closed", level=logging.ERROR, node=self.node)

    # --- rosters -----------------------------------------------------------------------

    async def roster(self, room: bytes) -> Roster | None:
        bound = self._rosters.get(room)
        if bound is not None:
            return bound
        self._connected()
        kv = self._rooms_kv
        assert kv is not None
        try:
            entry = await kv.get(room.hex())
        except KeyNotFoundError:
            return None
        bound = self._rosters[room] = _split_roster(entry.value or b"")
        return bound

    async def bind_roster(self, room: bytes, roster: Roster, *, max_rooms: int) -> Roster:
        bound = self._rosters.get(room)
        if bound is not None:
            return bound
        _, js = self._connected()
        kv = self._rooms_kv
        assert kv is not None
        key = room.hex()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            info = await js.stream_info(f"KV_{ROOMS_BUCKET}")
            if info.state.messages >= max_rooms:
                raise RoomLimitReached() from None
            try:
                await kv.create(key, b"".join(roster))
                bound = roster
            except KeyWrongLastSequenceError:  # another node registered it first
                entry = await kv.get(key)
                bound = _split_roster(entry.value or b"")
        else:
            bound = _split_roster(entry.value or b"")
        self._rosters[room] = bound
        return bound

    # --- appending ---------------------------------------------------------------------

    async def append(self, batch: Sequence[Publish]) -> list[Appended]:
        self._connected()
        by_room: dict[bytes, list[int]] = {}
        for i, p in enumerate(batch):
            by_room.setdefault(p.room, []).append(i)
        results: list[Appended | None] = [None] * len(batch)
        self._busy.update(by_room)
        try:
            outcomes = await asyncio.gather(
                *(
                    self._append_via_owner(room, [batch[i] for i in idx])
                    for room, idx in by_room.items()
                ),
                return_exceptions=True,
            )
            failure: BaseException | None = None
            for (room, idx), outcome in zip(by_room.items(), outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    self._heads.pop(room, None)
                    failure = failure or outcome
                    continue
                for i, res in zip(idx, outcome, strict=True):
                    results[i] = res
            if failure is not None:
                raise failure
            for room, idx in by_room.items():
                await self._interleave(room, idx, results)
        finally:
            self._busy.difference_update(by_room)
            loop = asyncio.get_running_loop()
            for room in by_room:
                # after the hub's dispatch of this batch (it runs right after we return)
                loop.call_soon(self._drain, room)
        return [r for r in results if r is not None]

    # --- one writer per room ---------------------------------------------------------------

    def _owner(self, room: bytes) -> str:
        """The node that stores `room`: rendezvous hashing over the live nodes (this one
        and every node whose presence snapshots arrive), passing over any that recently
        did not answer a forwarded append."""
        now = time.monotonic()
        best, best_score = self.node, _score(room, self.node)
        for name in self._nodes:
            until = self._suspect.get(name)
            if until is not None:
                if until > now:
                    continue
                del self._suspect[name]
            score = _score(room, name)
            if score > best_score:
                best, best_score = name, score
        return best

    async def _append_via_owner(self, room: bytes, items: list[Publish]) -> list[Appended]:
        """Store one room's share of a commit: here if this node owns the room, else by
        the owner (request/reply; it answers once JetStream acknowledged). An owner that
        does not answer is passed over and the next one (maybe this node) stores the
        rest; what it stored anyway comes back as a duplicate, by its receipt."""
        out: list[Appended] = []
        while len(out) < len(items):
            owner = self._owner(room)
            if owner == self.node:
                break
            if room not in self._fans:
                await self._fetch_head(room)  # start tracking the room's fan-out
            chunk = self._chunk(items, len(out))
            if not chunk:
                break  # a message too big to forward: stored here
            try:
                out += await self._forward(owner, room, chunk)
            except _OwnerGone as err:
                self._suspect[owner] = time.monotonic() + SUSPECT_FOR
                log_event(
                    log, "cluster_owner_gone", level=logging.WARNING, node=owner,
                    room=room.hex(), error=repr(err.__cause__),
                )  # fmt: skip
        if len(out) < len(items):
            out += await self._append_owned(room, items[len(out) :])
        return out

    def _chunk(self, items: list[Publish], start: int) -> list[Publish]:
        """As many of items[start:] as one forward request may carry."""
        assert self._nc is not None
        size, end = 16, start
        while end < len(items):
            size += _ITEM.size + len(items[end].sealed)
            if size > self._nc.max_payload - 1024:
                break
            end += 1
        return items[start:end]

    async def _forward(self, owner: str, room: bytes, items: list[Publish]) -> list[Appended]:
        nc, _ = self._connected()
        body = [room]
        for p in items:
            body += (_ITEM.pack(p.sender, p.counter, len(p.sealed)), p.sealed)
        try:
            reply = await nc.request(
                APPEND_SUBJECT + owner, b"".join(body), timeout=self.config.request_timeout
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as err:
            raise _OwnerGone(owner) from err
        data = reply.data
        if data[:1] == b"\x02":
            raise _OwnerGone(owner)  # it is closing
        if data[:1] != b"\x00" or len(data) != 1 + _RESULT.size * len(items):
            raise StorageUnavailable(f"node {owner} could not store: {data[1:200]!r}")
        return [Appended(seq, bool(dup)) for seq, dup in _RESULT.iter_unpack(data[1:])]

    async def _on_append(self, msg: Msg) -> None:
        self._spawn(self._serve_append(msg))  # NATS runs one callback at a time

    async def _serve_append(self, msg: Msg) -> None:
        """Store what another node forwarded (this node is the room's owner in its view,
        which is enough: the head expectation and the receipts guard every append)."""
        data = msg.data
        room, pos, items = data[:16], 16, []
        while pos < len(data):
            sender, counter, length = _ITEM.unpack_from(data, pos)
            pos += _ITEM.size
            items.append(Publish(room, sender, counter, data[pos : pos + length]))
            pos += length
        try:
            results = await self._append_owned(room, items)
        except asyncio.CancelledError:  # closing: the forwarder asks the next owner
            with contextlib.suppress(Exception):
                await msg.respond(b"\x02")
            raise
        except Exception as err:
            reply = b"\x02" if self._closing else b"\x01" + repr(err).encode()
        else:
            reply = b"\x00" + b"".join(_RESULT.pack(r.seq, r.duplicate) for r in results)
        with contextlib.suppress(Exception):
            await msg.respond(reply)

    async def _append_owned(self, room: bytes, items: list[Publish]) -> list[Appended]:
        """Store `items` here. Appends to the room that arrive (from this node or
        forwarded) while one is being stored wait and are then stored together."""
        future: asyncio.Future[list[Appended]] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(room)
        if queue is None:
            queue = self._queues[room] = _Queue()
            self._spawn(self._run_queue(room, queue))
        queue.waiting.append((items, future))
        return await future

    async def _run_queue(self, room: bytes, queue: _Queue) -> None:
        current: list[tuple[list[Publish], asyncio.Future[list[Appended]]]] = []
        try:
            while queue.waiting:
                current, queue.waiting = queue.waiting, []
                try:
                    results = await self._append_room(room, [p for b, _ in current for p in b])
                except Exception as err:
                    for _, future in current:
                        if not future.done():
                            future.set_exception(err)
                    continue
                at = 0
                for batch, future in current:
                    if not future.done():
                        future.set_result(results[at : at + len(batch)])
                    at += len(batch)
            current = []
        finally:
            if self._queues.get(room) is queue:
                del self._queues[room]
            for _, future in current + queue.waiting:
                if not future.done():
                    future.set_exception(StorageUnavailable("the relay is closing"))

    async def _append_room(self, room: bytes, items: list[Publish]) -> list[Appended]:
        """Store one room's share of a batch: atomic JetStream batches of up to
        `BATCH_MAX` messages, each chained to the room's head by one expectation."""
        head = self._heads.get(room) or await self._fetch_head(room)
        out: list[Appended | None] = [None] * len(items)
        first_of: dict[tuple[int, int], int] = {}  # (sender, counter) -> first index
        todo: list[int] = []
        for i, p in enumerate(items):
            key = (p.sender, p.counter)
            if key not in first_of:
                first_of[key] = i
                todo.append(i)
        held: dict[tuple[int, int], int] = {}  # already stored before: key -> its seq
        races = 0
        while todo:
            chunk = todo[:BATCH_MAX]
            try:
                last_sseq = await self._publish_batch(room, head, [items[i] for i in chunk])
            except APIError as err:
                if err.err_code not in (WRONG_LAST_SEQUENCE, BATCH_WRONG_LAST_SEQUENCE):
                    raise
                # another node appended to the room first, or a message is a resend
                races += 1
                if races > MAX_RACES:
                    raise StorageUnavailable("the room is too contended, retry later") from err
                head, found = await asyncio.gather(
                    self._fetch_head(room), self._lookup(room, [items[i] for i in todo])
                )
                held.update(found)
                todo = [i for i in todo if (items[i].sender, items[i].counter) not in held]
                continue
            total = head.total
            for n, i in enumerate(chunk):
                out[i] = Appended(head.seq + 1 + n, False)
                total += len(items[i].sealed)
            head = _Head(head.seq + len(chunk), last_sseq, total)
            self._heads[room] = head
            todo = todo[len(chunk) :]
        for i, p in enumerate(items):
            if out[i] is not None and first_of[(p.sender, p.counter)] == i:
                continue
            key = (p.sender, p.counter)
            seq = held.get(key)
            if seq is None:
                first = out[first_of[key]]
                assert first is not None
                seq = first.seq
            out[i] = Appended(seq, True)
        if head.total - self._floor(room) > self.retention.max_bytes:
            await self._trim_bytes(room, head)
        return [r for r in out if r is not None]

    async def _publish_batch(self, room: bytes, head: _Head, items: list[Publish]) -> int:
        """One atomic JetStream batch: per message, the room message and its receipt
        `ghostline.sent.<room>.<sender>.<counter>` (which must not exist yet). Returns
        the stream seq of the last room message."""
        nc, _ = self._connected()
        subject = _subject(room)
        sent = SENT_SUBJECT + room.hex() + "."
        batch_id = os.urandom(12).hex()
        total = head.total
        last = len(items) - 1
        async with self._batch_slots:
            for j, p in enumerate(items):
                seq = str(head.seq + 1 + j)
                total += len(p.sealed)
                h = {H_BATCH_ID: batch_id, H_BATCH_SEQ: str(2 * j + 1), H_SEQ: seq,
                     H_NODE: self.node, H_TOTAL: str(total)}  # fmt: skip
                if j == 0:
                    h[H_EXPECT] = str(head.sseq)
                await nc.publish(subject, p.sealed, headers=h)
                receipt = {H_BATCH_ID: batch_id, H_BATCH_SEQ: str(2 * j + 2), H_SEQ: seq,
                           H_EXPECT: "0"}  # fmt: skip
                where = f"{sent}{p.sender}.{p.counter}"
                if j < last:
                    await nc.publish(where, b"", headers=receipt)
                    continue
                receipt[H_COMMIT] = "1"
                try:
                    reply = await nc.request(
                        where, b"", timeout=self.config.request_timeout, headers=receipt
                    )
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as err:
                    raise StorageUnavailable(f"JetStream did not answer: {err!r}") from err
        resp = json.loads(reply.data)
        if "error" in resp:
            raise APIError.from_error(resp["error"])
        return int(resp["seq"]) - 1  # the receipt of the last message comes last

    async def _lookup(self, room: bytes, items: list[Publish]) -> dict[tuple[int, int], int]:
        """The stored seqs of those of `items` the room already holds (by receipt)."""
        prefix = SENT_SUBJECT + room.hex() + "."
        keys = sorted({(p.sender, p.counter) for p in items})
        found: dict[tuple[int, int], int] = {}
        for at in range(0, len(keys), LOOKUP_MAX):
            part = keys[at : at + LOOKUP_MAX]
            request = {"multi_last": [f"{prefix}{s}.{c}" for s, c in part], "batch": len(part)}
            for _, headers, _data in await self._direct(request):
                _, _, sender, counter = headers.get("Nats-Subject", "").rsplit(".", 3)
                found[(int(sender), int(counter))] = int(headers.get(H_SEQ, 0))
        return found

    def _floor(self, room: bytes) -> int:
        """The room's bytes stored before its first held message, as far as known."""
        first = self._firsts.get(room)
        return first[1] if first is not None else 0

    async def _trim_bytes(self, room: bytes, head: _Head) -> None:
        """Byte retention: remove the room's oldest messages (never the newest) until
        what it holds is within `retention.max_bytes`. Each message carries the room's
        running byte total (`Gl-Total`), so what is held from any message on is known."""
        subject = _subject(room)
        first = self._firsts.get(room)
        sseq = first[0] if first is not None else 1
        limit = self.retention.max_bytes
        keep: tuple[int, int] | None = None
        while keep is None:
            msgs = await self._batch(subject, sseq, 256, 4 * 2**20)
            if not msgs:
                return
            for mseq, headers, data in msgs:
                before = int(headers.get(H_TOTAL, 0)) - len(data)
                if head.total - before <= limit or mseq >= head.sseq:
                    keep = (mseq, before)
                    break
                sseq = mseq + 1
        if keep[0] > (first[0] if first is not None else 0):
            await self._purge(room, keep[0])
        self._firsts[room] = keep

    async def _purge(self, room: bytes, keep_from: int) -> int:
        """Remove the room's messages, and their receipts, below stream seq `keep_from`."""
        nc, _ = self._connected()
        purged = 0
        for subject in (_subject(room), SENT_SUBJECT + room.hex() + ".>"):
            reply = await nc.request(
                f"$JS.API.STREAM.PURGE.{STREAM}",
                json.dumps({"filter": subject, "seq": keep_from}).encode(),
                timeout=self.config.request_timeout,
            )
            if subject.startswith(ROOM_SUBJECT):
                purged = int(json.loads(reply.data).get("purged", 0))
        return purged

    async def _interleave(
        self, room: bytes, idx: list[int], results: list[Appended | None]
    ) -> None:
        """Attach to each new local message the other nodes' messages that precede it."""
        fan = self._fans.setdefault(room, _Fan(0))  # _fetch_head started tracking it
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
        if any(s not in fan.pending for s in want):
            after = fan.cursor
            while after < upto - 1:
                page = await self._read(room, after, min(256, upto - 1 - after))
                if not page:
                    break
                for m in page:
                    if m.seq < upto:
                        fan.pending.setdefault(m.seq, m.sealed)
                after = page[-1].seq
        out = [StoredMessage(s, fan.pending.pop(s)) for s in want if s in fan.pending]
        return out

    async def _fetch_head(self, room: bytes) -> _Head:
        _, js = self._connected()
        try:
            msg = await js.get_last_msg(STREAM, _subject(room), direct=True)
        except NotFoundError:
            head = _Head(0, 0)
        else:
            headers = msg.headers or {}
            head = _Head(int(headers.get(H_SEQ, 0)), msg.seq or 0, int(headers.get(H_TOTAL, 0)))
        self._heads[room] = head
        fan = self._fans.get(room)
        if fan is None:
            fan = self._fans[room] = _Fan(head.seq)
        fan.known = max(fan.known, head.seq)
        if fan.known > fan.cursor and room not in self._busy:
            self._drain(room)  # something stored never came live (e.g. lost in an outage)
        return head

    # --- reading -----------------------------------------------------------------------

    async def head(self, room: bytes) -> int:
        return (await self._fetch_head(room)).seq

    async def read_after(
        self, room: bytes, after: int, *, limit: int = 256, max_bytes: int = 4 * 2**20
    ) -> list[StoredMessage]:
        # A replay stops where this node's live fan-out stands: what follows reaches the
        # connection live, in order (the hub buffers it during the replay).
        fan = self._fans.get(room)
        page = await self._read(room, after, limit, max_bytes)
        fan = self._fans.get(room) or fan
        if fan is not None:
            page = [m for m in page if m.seq <= fan.cursor]
        return page

    async def _read(
        self, room: bytes, after: int, limit: int = 256, max_bytes: int = 4 * 2**20
    ) -> list[StoredMessage]:
        """Stored messages of `room` after `after`, straight from the stream."""
        _, js = self._connected()
        subject = _subject(room)
        try:
            last = await js.get_last_msg(STREAM, subject, direct=True)
        except NotFoundError:
            return []
        last_seq = int((last.headers or {}).get(H_SEQ, 0))
        if last_seq <= after or last.seq is None:
            return []
        start = await self._locate(subject, after, last.seq)
        out: list[StoredMessage] = []
        total = 0
        while len(out) < limit and total < max_bytes:
            msgs = await self._batch(subject, start, limit - len(out) + 1, max_bytes - total)
            if not msgs:
                break
            for sseq, headers, data in msgs:
                start = sseq + 1
                seq = int(headers.get(H_SEQ, 0))
                if headers.get(H_MARKER) or seq <= after:
                    continue
                out.append(StoredMessage(seq, data))
                total += len(data)
                if len(out) >= limit or total >= max_bytes:
                    break
            if start > last.seq:
                break
        return out

    async def _locate(self, subject: str, after: int, last_sseq: int) -> int:
        """The stream seq of the room's first message with Gl-Seq > after (binary search:
        a room's Gl-Seq only grows with the stream seq)."""
        first = await self._next(subject, 1)
        if first is None or first[1] > after:
            return first[0] if first is not None else last_sseq
        lo, hi, found = first[0], last_sseq, last_sseq
        while hi - lo > 1:
            mid = (lo + hi) // 2
            probe = await self._next(subject, mid)
            if probe is None:
                break
            if probe[1] > after:
                hi = mid
                found = probe[0]
            else:
                lo = max(mid, probe[0])
        return found

    async def _next(self, subject: str, sseq: int) -> tuple[int, int] | None:
        """(stream seq, Gl-Seq) of the room's first stream message at or after `sseq`."""
        _, js = self._connected()
        try:
            msg = await js.get_msg(STREAM, seq=sseq, subject=subject, next=True, direct=True)
        except NotFoundError:
            return None
        return msg.seq or 0, int((msg.headers or {}).get(H_SEQ, 0))

    async def _batch(
        self, subject: str, start: int, count: int, max_bytes: int
    ) -> list[tuple[int, dict[str, str], bytes]]:
        """Up to `count` stream messages of `subject` from stream seq `start` (one
        JetStream direct-get batch request)."""
        request = {"seq": start, "next_by_subj": subject, "batch": count, "max_bytes": max_bytes}
        return await self._direct(request)

    async def _direct(self, request: dict[str, Any]) -> list[tuple[int, dict[str, str], bytes]]:
        """The messages one JetStream direct-get batch request answers with."""
        nc, _ = self._connected()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out: list[tuple[int, dict[str, str], bytes]] = []
        try:
            await nc.publish(
                f"$JS.API.DIRECT.GET.{STREAM}", json.dumps(request).encode(), reply=inbox
            )
            while True:
                msg = await sub.next_msg(self.config.request_timeout)
                headers = {str(k): v for k, v in (msg.headers or {}).items()}
                status = headers.get("Status")
                if status is not None and not msg.data:
                    if status in ("204", "404"):
                        break
                    raise StorageUnavailable(f"JetStream direct get failed: status {status}")
                out.append((int(headers["Nats-Sequence"]), headers, msg.data))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return out

    # --- live fan-out from other nodes ---------------------------------------------------

    async def _on_live(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if headers.get(H_MARKER) or H_SEQ not in headers:
            return
        room = bytes.fromhex(msg.subject[len(LIVE_SUBJECT) :])
        seq = int(headers[H_SEQ])
        fan = self._fans.get(room)
        if fan is None:
            fan = self._fans[room] = _Fan(seq - 1)
        fan.known = max(fan.known, seq)
        if seq <= fan.cursor:
            return  # ours (already dispatched by the hub) or delivered before
        fan.pending[seq] = msg.data
        if room not in self._busy:
            self._drain(room)

    def _drain(self, room: bytes) -> None:
        """Hand the hub every message that is next in line; schedule a fill on a gap."""
        fan = self._fans.get(room)
        if fan is None or room in self._busy:
            return
        ready: list[StoredMessage] = []
        while fan.cursor + 1 in fan.pending:
            fan.cursor += 1
            ready.append(StoredMessage(fan.cursor, fan.pending.pop(fan.cursor)))
        for seq in [s for s in fan.pending if s <= fan.cursor]:
            del fan.pending[seq]
        if ready and self._hub is not None:
            self._hub.on_remote_messages(room, ready)
        if (fan.pending or fan.known > fan.cursor) and not fan.filling:
            fan.filling = True
            self._spawn(self._fill(room, fan))

    async def _fill(self, room: bytes, fan: _Fan) -> None:
        """Read from the stream what should have come live but did not (in time)."""
        try:
            await asyncio.sleep(GAP_WAIT)
            target = max([fan.known, *fan.pending])
            if room in self._busy or self._closing or target <= fan.cursor:
                return
            page = await self._read(room, fan.cursor, min(256, target - fan.cursor))
            for m in page:
                if m.seq > fan.cursor:
                    fan.pending.setdefault(m.seq, m.sealed)
            if room not in self._busy and (not page or page[0].seq > fan.cursor + 1):
                # retention removed the missing ones: go on with what is stored
                fan.cursor = max(fan.cursor, (page[0].seq if page else target) - 1)
        except StorageUnavailable:
            fan.filling = False
            return  # the reconnect catches up
        except Exception as err:
            log_event(
                log, "cluster_fill_failed", level=logging.WARNING, room=room.hex(), error=repr(err)
            )
            await asyncio.sleep(GAP_WAIT)
        finally:
            fan.filling = False
        if not self._closing:
            self._drain(room)

    async def _catch_up(self, room: bytes) -> None:
        """After a reconnect: learn the head, so what this node missed gets filled."""
        with contextlib.suppress(Exception):
            await self._fetch_head(room)

    # --- retention by age ----------------------------------------------------------------

    async def expire(self, now: float) -> int:
        if self._nc is None or not self._nc.is_connected:
            return 0
        _, js = self._connected()
        cutoff = now - self.retention.max_age
        info = await js.stream_info(STREAM, subjects_filter=ROOM_SUBJECT + "*")
        removed = 0
        for subject in info.state.subjects or {}:
            room = bytes.fromhex(subject[len(ROOM_SUBJECT) :])
            first = await js.get_msg(STREAM, seq=1, subject=subject, next=True, direct=True)
            if _stamp(first) >= cutoff:
                if first.seq and self._receipts_from.get(room) != first.seq:
                    # receipts of messages the count limit removed
                    await self._purge(room, first.seq)
                    self._receipts_from[room] = first.seq
                continue
            last = await js.get_last_msg(STREAM, subject, direct=True)
            headers = last.headers or {}
            if _stamp(last) < cutoff:
                if headers.get(H_MARKER) and first.seq == last.seq:
                    continue
                # Everything is old: leave a marker holding the head, so numbering goes on.
                try:
                    ack = await js.publish(
                        subject, b"", stream=STREAM,
                        headers={H_SEQ: headers.get(H_SEQ, "0"), H_MARKER: "1",
                                 H_TOTAL: headers.get(H_TOTAL, "0"), H_NODE: self.node,
                                 H_EXPECT: str(last.seq)},
                    )  # fmt: skip
                except APIError:
                    continue  # someone appended meanwhile: next round
                keep_from = ack.seq
            else:
                keep_from = await self._first_since(subject, first.seq or 1, last.seq or 1, cutoff)
            removed += await self._purge(room, keep_from)
            self._receipts_from[room] = keep_from
        return removed

    async def _first_since(self, subject: str, lo: int, hi: int, cutoff: float) -> int:
        """The stream seq of the room's first message stored at or after `cutoff`, given
        that the one at `lo` is older and the one at `hi` is not."""
        _, js = self._connected()
        found = hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            probe = await js.get_msg(STREAM, seq=mid, subject=subject, next=True, direct=True)
            if _stamp(probe) >= cutoff:
                hi, found = mid, probe.seq or found
            else:
                lo = mid
        return found

    # --- presence ----------------------------------------------------------------------

    async def set_presence(self, room: bytes, member: int, online: bool) -> None:
        members = self._local.get(room)
        if online:
            if members is None:
                members = self._local[room] = set()
            members.add(member)
        elif members is not None:
            members.discard(member)
            if not members:
                del self._local[room]
        self._schedule_snapshot()

    def _schedule_snapshot(self) -> None:
        if not self._snapshot_due:
            self._snapshot_due = True
            asyncio.get_running_loop().call_soon(lambda: self._spawn(self._send_snapshot()))

    async def _send_snapshot(self) -> None:
        self._snapshot_due = False
        nc = self._nc
        if nc is None or not nc.is_connected or self._closing:
            return
        parts = []
        for room, members in self._local.items():
            parts.append(room + _U16.pack(len(members)))
            parts.extend(_U16.pack(m) for m in sorted(members))
        with contextlib.suppress(Exception):
            await nc.publish(PRESENCE_SUBJECT + self.node, b"\x01" + b"".join(parts))

    async def _on_sync(self, msg: Msg) -> None:
        if msg.data.decode(errors="replace") != self.node:
            self._schedule_snapshot()

    async def _on_presence(self, msg: Msg) -> None:
        node = msg.subject[len(PRESENCE_SUBJECT) :]
        if node == self.node:
            return
        rooms = _parse_snapshot(msg.data)
        before = self._nodes.get(node)
        if rooms is None:  # goodbye
            self._nodes.pop(node, None)
        else:
            self._nodes[node] = _Node(time.monotonic(), rooms)
        old = before.rooms if before is not None else {}
        new = rooms or {}
        changed = {r for r in old.keys() | new.keys() if old.get(r) != new.get(r)}
        self._announce(changed)

    def _announce(self, rooms: set[bytes]) -> None:
        if self._hub is None:
            return
        for room in rooms:
            online: set[int] = set()
            for other in self._nodes.values():
                online |= other.rooms.get(room, frozenset())
            self._hub.on_presence(room, frozenset(online))

    async def _heartbeat(self) -> None:
        last = 0.0
        while True:
            await asyncio.sleep(1.0)
            nc = self._nc
            if nc is None or not nc.is_connected:
                continue
            now = time.monotonic()
            dead = [n for n, s in self._nodes.items() if now - s.seen > DEAD_AFTER]
            for name in dead:
                gone = self._nodes.pop(name)
                log_event(log, "cluster_node_gone", level=logging.WARNING, node=name)
                self._announce(set(gone.rooms))
            if now - last >= HEARTBEAT:
                last = now
                self._schedule_snapshot()


def cluster_backend(
    urls: str, node: str | None, replicas: int, retention: Retention
) -> tuple[NatsBackend, str]:
    """The backend for `ghostline relay --cluster URLS`, and the line that describes it."""
    servers = tuple(u.strip() for u in urls.split(",") if u.strip())
    if not servers or not all(u.startswith(("nats://", "tls://")) for u in servers):
        raise UsageError("--cluster takes nats://HOST:PORT or tls://HOST:PORT, comma-separated")
    name = node or re.sub(r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname()}-{os.getpid()}")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise UsageError("--node-name: 1 to 64 letters, digits, '-' or '_'")
    if not 1 <= replicas <= 5:
        raise UsageError("--cluster-replicas must be 1 to 5")
    config = ClusterConfig(servers, name, replicas=replicas)
    return NatsBackend(config, retention), f"cluster {','.join(servers)} node {name}"


def _score(room: bytes, node: str) -> tuple[bytes, str]:
    return hashlib.blake2b(room + node.encode(), digest_size=8).digest(), node


def _split_roster(blob: bytes) -> Roster:
    return tuple(blob[i : i + 32] for i in range(0, len(blob), 32))


def _parse_snapshot(data: bytes) -> dict[bytes, frozenset[int]] | None:
    if not data:
        return None
    rooms: dict[bytes, frozenset[int]] = {}
    pos = 1
    while pos + 18 <= len(data):
        room = data[pos : pos + 16]
        (count,) = _U16.unpack_from(data, pos + 16)
        pos += 18
        members = [_U16.unpack_from(data, pos + 2 * i)[0] for i in range(count)]
        pos += 2 * count
        if members:
            rooms[room] = frozenset(members)
    return rooms


def _stamp(msg: Any) -> float:
    """The store time of a directly fetched stream message, as a POSIX time."""
    text = (msg.headers or {}).get("Nats-Time-Stamp", "")
    if not text:
        return 0.0
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))
