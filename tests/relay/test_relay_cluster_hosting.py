"""A cluster node receives the chunks of only the rooms it hosts (cluster/hosting.py):
two nodes in this process over a real nats-server, real members on their relay ports.
A node with no member in a room gets none of its chunks; a member joining a busy room
on a node that did not host it gets every message once, in order; once its last member
left, the node stops receiving the room, and a rejoin picks up exactly where it was."""

# ruff: noqa: F811 - pytest fixtures imported from clusterkit are test parameters

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import pytest
from clusterkit import Member, nats_server, needs_nats  # noqa: F401 - fixtures
from relaytest_client import ErrorCode, Group, RelayError, joined

from ghostline.relay import RelayLimits, RelayServer, Retention
from ghostline.relay.cluster import ClusterConfig, NatsBackend
from ghostline.relay.cluster.fanout import Fanout
from ghostline.relay.cluster.layout import LIVE_SUBJECT, room_of
from waiting import until

pytestmark = needs_nats


class Node:
    def __init__(self, backend: NatsBackend, server: RelayServer) -> None:
        self.backend, self.server = backend, server

    @property
    def port(self) -> int:
        return self.server.relay_port

    def hosts(self, room: bytes) -> bool:
        return room in self.backend.fanout.hosted or self.backend.fanout.tracking(room)


@pytest.fixture
def received(monkeypatch) -> dict[int, Counter[bytes]]:
    """Per fan-out (id): how many live chunks of each room reached it from NATS."""
    counts: dict[int, Counter[bytes]] = {}
    real = Fanout.on_live

    async def counting(self: Fanout, msg: Any) -> None:
        room = room_of(msg.subject)
        assert room is not None
        counts.setdefault(id(self), Counter())[room] += 1
        await real(self, msg)

    monkeypatch.setattr(Fanout, "on_live", counting)
    return counts


@pytest.fixture
async def nodes(nats_server, received) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes "a" and "b", each knowing the other is alive."""
    started: list[Node] = []
    try:
        for name in "ab":
            backend = NatsBackend(ClusterConfig((nats_server.url,), name), Retention())
            server = RelayServer(backend, RelayLimits(publish_rate=100_000, publish_burst=100_000))
            await server.start("127.0.0.1", 0, 0)
            started.append(Node(backend, server))
        a, b = started
        await until(
            lambda: a.backend.presence.nodes == ["b"] and b.backend.presence.nodes == ["a"],
            20, "peers",
        )  # fmt: skip
        yield a, b
    finally:
        for node in started:
            await node.server.close()


def chunks_of(received: dict[int, Counter[bytes]], node: Node, room: bytes) -> int:
    return received.get(id(node.backend.fanout), Counter())[room]


async def test_a_node_with_no_member_in_a_room_receives_none_of_its_chunks(nodes, received):
    a, b = nodes
    only_a, shared = Group(3), Group(2)
    on_a = [Member(only_a, i, [a.port]) for i in range(3)]
    writer, reader = Member(shared, 0, [a.port]), Member(shared, 1, [b.port])
    for m in (*on_a, writer, reader):
        await m.connect()
    for _ in range(10):
        await asyncio.gather(*(m.publish(2) for m in on_a))
    await until(lambda: all(m.all_accepted() for m in on_a), what="all accepted on a")
    # stored (and republished) before the message that b's member waits for below: had
    # b taken the room's subject, its chunks would have reached it first
    await writer.publish()
    await until(lambda: len(reader.delivered) == 1, what="b's member got the shared room")
    assert chunks_of(received, b, shared.room) >= 1
    assert chunks_of(received, b, only_a.room) == 0
    assert not b.hosts(only_a.room)
    for m in on_a:
        await until(lambda m=m: len(m.delivered) == 40, what="a's members got the room")
    for m in (*on_a, writer, reader):
        await m.close()


async def test_a_node_stops_receiving_a_room_its_last_member_left_and_a_rejoin_resumes(
    nodes, received
):
    a, b = nodes
    group = Group(2)
    writer, reader = Member(group, 0, [a.port]), Member(group, 1, [b.port])
    await writer.connect()
    await reader.connect()
    await writer.publish(5)
    await until(lambda: reader.cursor == 5, what="live on b")
    await reader.close()
    await until(lambda: not b.hosts(group.room), what="b lets the room go")
    await until(lambda: not b.backend.hosting._subs, what="its subscription with it")
    nc = b.backend.link.nc
    assert nc is not None
    await nc.flush()  # (twice: see hosting.py) nats-server took the UNSUB
    await nc.flush()
    before = chunks_of(received, b, group.room)
    await writer.publish(7)
    await until(writer.all_accepted, what="stored while b hosts nothing")
    assert chunks_of(received, b, group.room) == before
    await reader.connect()  # resumes after seq 5
    await writer.publish(3)
    await until(lambda: reader.cursor == 15, what="replayed and live after the rejoin")
    assert [seq for seq, _ in reader.delivered] == list(range(1, 16))
    assert [body for _, body in reader.delivered] == [writer.outbox[c] for c in range(15)]
    assert chunks_of(received, b, group.room) > before
    await writer.close()
    await reader.close()


async def test_members_joining_a_busy_room_on_a_node_new_to_it_get_every_message_once(nodes, rng):
    """Randomised (the seed is printed): a member publishes on a, in bursts, while members
    of the room join b, leave it (b then hosts nothing) and join again, anywhere in the
    stream; each sees every message of the others exactly once, in seq order (Member
    asserts the order as frames come)."""
    a, b = nodes
    group = Group(3)
    writer = Member(group, 0, [a.port])
    joiners = [Member(group, i, [b.port]) for i in (1, 2)]
    await writer.connect()
    total = rng.randint(150, 300)

    async def publish() -> None:
        sent = 0
        while sent < total:
            burst = min(total - sent, rng.randint(1, 8))
            await writer.publish(burst, size=rng.randint(0, 200))
            sent += burst
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.005]))

    async def come_and_go(m: Member) -> None:
        for _ in range(rng.randint(1, 3)):
            await asyncio.sleep(rng.uniform(0, 0.3))
            await m.connect()
            await asyncio.sleep(rng.uniform(0, 0.3))
            await m.close()
        await m.connect()

    await asyncio.gather(publish(), *(come_and_go(m) for m in joiners))
    await until(writer.all_accepted, 60, "every message accepted")
    assert sorted(writer.accepted.values()) == list(range(1, total + 1))
    for m in joiners:
        await until(lambda m=m: m.cursor == total, 60, "every message reached the joiner")
        assert [seq for seq, _ in m.delivered] == list(range(1, total + 1))
        assert [body for _, body in m.delivered] == [writer.outbox[c] for c in range(total)]
    for m in (writer, *joiners):
        await m.close()


async def test_a_room_the_node_cannot_subscribe_to_refuses_the_join_and_is_not_left_held(
    nodes, monkeypatch
):
    a, _ = nodes
    nc = a.backend.link.nc
    assert nc is not None
    real_subscribe = nc.subscribe

    async def refusing(subject: str, **kw: Any) -> Any:
        if subject.startswith("ghostline.live."):
            raise RuntimeError("no subscription today")
        return await real_subscribe(subject, **kw)

    monkeypatch.setattr(nc, "subscribe", refusing)
    group = Group(2)
    with pytest.raises(RelayError) as refused:
        await joined(a.port, group, 0)
    assert refused.value.code == ErrorCode.INTERNAL
    await until(lambda: not a.backend.registry._holds, what="the room let go")
    assert not a.hosts(group.room) and not a.backend.hosting._subs
    monkeypatch.setattr(nc, "subscribe", real_subscribe)
    client = await joined(a.port, group, 0)  # works again once NATS does
    assert a.hosts(group.room)
    await client.close()


async def test_an_unsubscribe_that_fails_is_logged_and_its_chunks_are_dropped(
    nodes, received, caplog
):
    a, b = nodes
    group = Group(2)
    writer, reader = Member(group, 0, [a.port]), Member(group, 1, [b.port])
    await writer.connect()
    await reader.connect()
    sub = b.backend.hosting._subs[group.room].result()

    async def failing() -> None:
        raise RuntimeError("no unsubscribe today")

    sub.unsubscribe = failing  # type: ignore[method-assign]
    await reader.close()
    await until(lambda: "cluster_unsubscribe_failed" in caplog.text, what="the failure logged")
    assert not b.hosts(group.room)
    await writer.publish(3)
    await until(lambda: chunks_of(received, b, group.room) >= 1, what="its chunks still come")
    assert not b.backend.fanout.tracking(group.room)  # and are dropped
    await writer.close()


async def test_a_chunk_missed_right_after_subscribing_is_filled_by_the_second_look(
    nodes, monkeypatch
):
    """On a NATS cluster a chunk stored while the new subscription travels to the server
    that republishes it never comes live (here: dropped on its way to b); in a room that
    then goes quiet, the second look at the head fills it."""
    a, b = nodes
    group = Group(2)
    while a.backend.ownership.owner(group.room) != "a":  # b takes it from a's republish
        group = Group(2)
    writer, reader = Member(group, 0, [a.port]), Member(group, 1, [b.port])
    dropped: list[bytes] = []
    real = Fanout.on_live

    async def dropping(self: Fanout, msg: Any) -> None:
        if self is b.backend.fanout and not dropped:
            dropped.append(msg.data)
            return
        await real(self, msg)

    monkeypatch.setattr(Fanout, "on_live", dropping)  # (taken when b subscribes)
    await writer.connect()
    await reader.connect()
    await writer.publish()
    await until(lambda: dropped, what="the chunk lost on its way to b")
    monkeypatch.setattr("ghostline.relay.cluster.hosting.LOOK_AGAIN", 0)
    await b.backend.hosting._look_again(group.room)
    await until(lambda: reader.cursor == 1, what="filled from the stream")
    assert reader.delivered == [(1, writer.outbox[0])]
    await writer.close()
    await reader.close()


def live_subs(node: Node, room: bytes) -> int:
    """nats-py's subscriptions of the node to the room's live subject."""
    nc = node.backend.link.nc
    assert nc is not None
    return sum(sub.subject == LIVE_SUBJECT + room.hex() for sub in nc._subs.values())


@dataclass
class Gated:
    """Node a's nats-py subscribes to live subjects: each waits for `gate` (a subscribe
    that gives the loop turns, as nats-py's does when its pending buffer is full); the
    first fails once through it if `fail_first` (NATS briefly away)."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[str] = field(default_factory=list)  # subscribes begun
    made: list[str] = field(default_factory=list)  # and made
    fail_first: bool = False


@pytest.fixture
def gated_subscribe(nodes, monkeypatch) -> Gated:
    a, _ = nodes
    nc = a.backend.link.nc
    assert nc is not None
    real_subscribe = nc.subscribe
    gated = Gated()

    async def subscribe(subject: str, **kw: Any) -> Any:
        if not subject.startswith(LIVE_SUBJECT):
            return await real_subscribe(subject, **kw)
        gated.calls.append(subject)
        await gated.gate.wait()
        if gated.fail_first and len(gated.calls) == 1:
            raise nats.errors.ConnectionReconnectingError()
        sub = await real_subscribe(subject, **kw)
        gated.made.append(subject)
        return sub

    monkeypatch.setattr(nc, "subscribe", subscribe)
    return gated


async def turns(n: int = 50) -> None:
    """Let other tasks run as far as they can without I/O (no time passes)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_joins_that_overlap_a_rooms_subscribe_share_one_subscription(nodes, gated_subscribe):
    a, _ = nodes
    gated = gated_subscribe
    gate, calls = gated.gate, gated.calls
    room = Group(2).room
    first = asyncio.create_task(a.backend.hosting.hold(room))
    await until(lambda: calls, what="the first join's subscribe under way")
    second = asyncio.create_task(a.backend.hosting.hold(room))
    await turns()  # the second join gets as far as it can while the first subscribes
    gate.set()
    await asyncio.gather(first, second)
    assert len(calls) == 1
    assert live_subs(a, room) == 1
    a.backend.hosting.drop(room)
    await until(lambda: live_subs(a, room) == 0, what="the one subscription gone")


async def test_a_room_dropped_while_its_subscribe_is_on_its_way_is_unsubscribed_once_made(
    nodes, gated_subscribe
):
    a, _ = nodes
    gated = gated_subscribe
    gate, calls, made = gated.gate, gated.calls, gated.made
    room = Group(2).room
    join = asyncio.create_task(a.backend.hosting.hold(room))
    await until(lambda: calls, what="the join's subscribe under way")
    join.cancel()  # the joining connection went away
    with pytest.raises(asyncio.CancelledError):
        await join
    a.backend.hosting.drop(room)
    gate.set()
    await until(lambda: made, what="the subscription made after all")
    await until(lambda: live_subs(a, room) == 0, what="and undone")
    assert len(calls) == 1 and not a.backend.hosting._subs


async def test_a_rooms_subscribe_that_failed_is_made_again_and_shared_by_its_joins(
    nodes, gated_subscribe
):
    a, _ = nodes
    gated = gated_subscribe
    gated.fail_first = True  # NATS briefly away: the joins' retry waits and tries again
    room = Group(2).room
    first = asyncio.create_task(a.backend.hosting.hold(room))
    await until(lambda: gated.calls, what="the first join's subscribe under way")
    second = asyncio.create_task(a.backend.hosting.hold(room))
    await turns()  # the second join waits on the same subscribe
    gated.gate.set()
    await asyncio.gather(first, second)  # (a failed one kept would fail both for good)
    assert len(gated.calls) == 2
    assert live_subs(a, room) == 1
    a.backend.hosting.drop(room)
    await until(lambda: live_subs(a, room) == 0, what="the one subscription gone")


async def test_a_room_joined_again_while_its_dropped_subscribe_is_on_its_way_keeps_the_new_one(
    nodes, gated_subscribe
):
    a, _ = nodes
    gated = gated_subscribe
    gate, calls, made = gated.gate, gated.calls, gated.made
    room = Group(2).room
    join = asyncio.create_task(a.backend.hosting.hold(room))
    await until(lambda: calls, what="the first join's subscribe under way")
    join.cancel()
    with pytest.raises(asyncio.CancelledError):
        await join
    a.backend.hosting.drop(room)
    again = asyncio.create_task(a.backend.hosting.hold(room))
    await until(lambda: len(calls) == 2, what="the second join's own subscribe under way")
    gate.set()
    await again
    await until(lambda: len(made) == 2, what="both subscriptions made")
    await until(lambda: live_subs(a, room) == 1, what="the dropped one undone")
    kept = a.backend.hosting._subs[room].result()
    nc = a.backend.link.nc
    assert nc is not None and nc._subs.get(kept._id) is kept  # the one left is the new one
