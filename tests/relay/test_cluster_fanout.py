"""A node's fan-out of one room (cluster/fanout.py), with the stream in memory: whatever
order the node's own appends, the chunks it stores for other nodes, the republished
chunks (its own and others', some lost) arrive in, its hub sees every seq exactly once
and in order, and the republish of a chunk the node wrote itself is never decoded."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from nats.aio.msg import Msg

from ghostline.relay.backend import Appended, Publish, StoredMessage
from ghostline.relay.cluster import chunks
from ghostline.relay.cluster.fanout import Fanout
from ghostline.relay.cluster.items import Items
from ghostline.relay.cluster.layout import LIVE_SUBJECT
from ghostline.relay.cluster.paging import Stored
from waiting import until

ROOM = bytes(range(16))
MINE, OTHER = b"mine", b"othr"


class Stream:
    """The room's chunks as JetStream would hold them; reads as the real Reader."""

    def __init__(self) -> None:
        self.stored: list[Stored] = []
        self.bodies: list[bytes] = []
        self.head = 0
        self.total = 0
        self.decoded_mine = 0

    def write(self, writer: bytes, rng: random.Random) -> tuple[bytes, chunks.Chunk]:
        publishes = [
            Publish(ROOM, 0, self.head + i, rng.randbytes(rng.randint(0, 40)))
            for i in range(rng.randint(1, 4))
        ]
        self.head += len(publishes)
        self.total += sum(len(p.sealed) for p in publishes)
        write_id = writer + len(self.stored).to_bytes(4, "big")
        body, chunk = chunks.build(self.head, self.total, {}, Items.of(publishes), write_id, "n")
        self.stored.append(Stored(len(self.stored) + 1, chunk, 0.0))
        self.bodies.append(body)
        return body, chunk

    def messages(self) -> list[StoredMessage]:
        return [m for s in self.stored for m in s.chunk.messages()]

    async def get(self, room: bytes, **_: Any) -> Stored | None:
        return self.stored[-1] if self.stored else None

    async def read(self, room: bytes, after: int, limit: int = 256, *_: Any) -> list:
        return [m for m in self.messages() if m.seq > after][:limit]


class Hub:
    def __init__(self) -> None:
        self.seen: list[StoredMessage] = []

    def on_remote_messages(self, room: bytes, messages: list[StoredMessage]) -> None:
        self.seen += messages


def live(body: bytes) -> Msg:
    return Msg(_client=None, subject=LIVE_SUBJECT + ROOM.hex(), data=body)  # type: ignore[arg-type]


async def test_every_seq_reaches_the_hub_once_in_order_whatever_arrives_when(rng, monkeypatch):
    stream, hub = Stream(), Hub()
    tasks: set[asyncio.Task[None]] = set()
    fanout = Fanout(stream, lambda coro: tasks.add(asyncio.ensure_future(coro)))  # type: ignore[arg-type]
    fanout.writer, fanout.hub = MINE, hub  # type: ignore[assignment]
    fanout.hosted.add(ROOM)
    real_decode = chunks.decode

    def counting_decode(body: bytes) -> chunks.Chunk:
        if chunks.peek_writer(body) == MINE:
            stream.decoded_mine += 1
        return real_decode(body)

    monkeypatch.setattr("ghostline.relay.cluster.fanout.decode", counting_decode)
    damaged: list[object] = []
    monkeypatch.setattr("ghostline.relay.cluster.fanout._damaged", lambda *a: damaged.append(a))
    await fanout.fetch_head(ROOM)
    late_own: list[bytes] = []  # own republishes that arrive later than the append
    cut_off = False  # a republish was lost: the node was cut off from NATS

    async def republish(body: bytes) -> None:
        nonlocal cut_off
        if rng.random() < 0.1:
            cut_off = True  # lost: filled from the stream once a later one or the reconnect
            return  # tells how far the room is stored
        if chunks.peek_writer(body) == MINE and rng.random() < 0.5:
            late_own.append(body)
        else:
            await fanout.on_live(live(body))

    for _ in range(rng.randint(20, 50)):
        kind = rng.choice(["other", "stored", "append", "append", "wait"])
        if kind == "other":  # another node's chunk
            await republish(stream.write(OTHER, rng)[0])
        elif kind == "stored":  # this node, as owner, stored other nodes' messages
            body, chunk = stream.write(MINE, rng)
            fanout.stored(ROOM, chunk.messages())
            await republish(body)
        elif kind == "append":  # this node's hub appends; others write meanwhile
            fanout.busy.add(ROOM)
            for _ in range(rng.randint(0, 2)):
                await republish(stream.write(OTHER, rng)[0])
            body, chunk = stream.write(MINE, rng)
            await republish(body)
            for _ in range(rng.randint(0, 2)):
                await republish(stream.write(OTHER, rng)[0])
            results: list[Appended | None] = [Appended(m.seq, False) for m in chunk.messages()]
            await fanout.interleave(ROOM, list(range(len(results))), results)
            for res, own in zip(results, chunk.messages(), strict=True):  # as the hub sends
                assert res is not None
                hub.seen += [*res.preceded_by, own]
            fanout.busy.discard(ROOM)
            fanout.drain(ROOM)
        else:
            for body in late_own:
                await fanout.on_live(live(body))
            late_own.clear()
            if cut_off and rng.random() < 0.5:  # reconnected: the backend catches up
                await fanout.catch_up(ROOM)
                cut_off = False
            await asyncio.sleep(rng.choice([0, 0.15]))

    for body in late_own:
        await fanout.on_live(live(body))
    if cut_off:
        await fanout.catch_up(ROOM)
    everything = stream.messages()
    await until(lambda: len(hub.seen) >= len(everything), 10, "every message fanned out")
    assert [m.seq for m in hub.seen] == list(range(1, stream.head + 1))
    assert hub.seen == everything
    assert stream.decoded_mine == 0
    assert damaged == []
    for task in tasks:
        task.cancel()


async def test_a_busy_owner_reads_nothing_from_the_stream_that_is_on_its_way(monkeypatch):
    """On an owner storing other nodes' messages, the republish of its own chunk often
    arrives before the journal hands the chunk's messages over, and by the time the
    gap's wait is over the next chunk is on its way the same way: none of it is read
    from the stream."""
    monkeypatch.setattr("ghostline.relay.cluster.fanout.GAP_WAIT", 0.01)
    rng = random.Random(1)
    stream, hub = Stream(), Hub()
    reads: list[int] = []
    real_read = stream.read

    async def counting_read(room: bytes, after: int, limit: int = 256, *_: Any) -> list:
        reads.append(after)
        return await real_read(room, after, limit)

    stream.read = counting_read  # type: ignore[method-assign]
    tasks: list[asyncio.Task[None]] = []
    fanout = Fanout(stream, lambda coro: tasks.append(asyncio.ensure_future(coro)))  # type: ignore[arg-type]
    fanout.writer, fanout.hub = MINE, hub  # type: ignore[assignment]
    fanout.hosted.add(ROOM)
    await fanout.fetch_head(ROOM)
    first_body, first = stream.write(MINE, rng)
    await fanout.on_live(live(first_body))  # before the journal's hand-over: a gap, for now
    assert len(tasks) == 1
    fanout.stored(ROOM, first.messages())
    second_body, second = stream.write(MINE, rng)
    await fanout.on_live(live(second_body))
    await tasks[0]  # the first gap's wait is over while the second chunk is on its way
    fanout.stored(ROOM, second.messages())
    while not all(task.done() for task in tasks):
        await asyncio.gather(*tasks)
    assert hub.seen == stream.messages()
    assert reads == []


async def test_a_chunk_that_comes_before_the_head_read_is_filled_not_lost(monkeypatch):
    """A node that just subscribed to a room (hosting.py) may get a chunk live before it
    read the room's head, and that read may then answer an older head: the chunk's
    messages still reach the hub, once, from the stream."""
    monkeypatch.setattr("ghostline.relay.cluster.fanout.GAP_WAIT", 0.01)
    rng = random.Random(2)
    stream, hub = Stream(), Hub()
    tasks: list[asyncio.Task[None]] = []
    fanout = Fanout(stream, lambda coro: tasks.append(asyncio.ensure_future(coro)))  # type: ignore[arg-type]
    fanout.writer, fanout.hub = MINE, hub  # type: ignore[assignment]
    fanout.hosted.add(ROOM)
    stream.write(OTHER, rng)
    older = stream.stored[-1]
    body, chunk = stream.write(OTHER, rng)
    await fanout.on_live(live(body))  # before the head read: not tracked yet
    assert not fanout.tracking(ROOM) and hub.seen == []

    async def older_head(room: bytes, **_: Any) -> Stored:
        return older

    stream.get = older_head  # type: ignore[method-assign]
    assert await fanout.fetch_head(ROOM) == older.chunk.last
    await until(lambda: len(hub.seen) == chunk.count, 10, "the early chunk filled")
    while not all(task.done() for task in tasks):
        await asyncio.gather(*tasks)
    assert hub.seen == chunk.messages()


async def test_a_room_not_hosted_is_not_tracked_and_one_let_go_is_forgotten():
    rng = random.Random(3)
    stream, hub = Stream(), Hub()
    fanout = Fanout(stream, lambda coro: coro.close())  # type: ignore[arg-type]
    fanout.writer, fanout.hub = MINE, hub  # type: ignore[assignment]
    body, _ = stream.write(OTHER, rng)
    await fanout.on_live(live(body))  # (queued before the subscription ended)
    assert await fanout.fetch_head(ROOM) == stream.head  # e.g. a catch-up after it left
    assert not fanout.tracking(ROOM) and hub.seen == []
    fanout.hosted.add(ROOM)
    await fanout.fetch_head(ROOM)
    assert fanout.cursor(ROOM) == stream.head
    fanout.forget(ROOM)
    assert not fanout.tracking(ROOM) and ROOM not in fanout.hosted


async def test_a_joining_member_is_never_given_a_head_below_what_was_fanned_out():
    """A later head read may reach a replica that lags: the member then replays up to
    what this node already fanned out, and gets the rest live, with no gap between."""
    rng = random.Random(4)
    stream, hub = Stream(), Hub()
    fanout = Fanout(stream, lambda coro: coro.close())  # type: ignore[arg-type]
    fanout.writer, fanout.hub = MINE, hub  # type: ignore[assignment]
    fanout.hosted.add(ROOM)
    await fanout.fetch_head(ROOM)
    stream.write(OTHER, rng)
    lagging = stream.stored[-1]
    body, _ = stream.write(OTHER, rng)
    await fanout.on_live(live(stream.bodies[0]))
    await fanout.on_live(live(body))
    assert fanout.cursor(ROOM) == stream.head

    async def lagging_head(room: bytes, **_: Any) -> Stored:
        return lagging

    stream.get = lagging_head  # type: ignore[method-assign]
    assert await fanout.fetch_head(ROOM) == stream.head
