"""Rooms come and go in a cluster as on a single relay: a room is live while a connection
on any node holds it or it holds a message, `--max-rooms` counts live rooms, and a room
retired keeps its roster (in NATS, for every node) and its numbering. Real nats-server
and relay processes (and, for the age limit, a relay in this process so the test can
move its clock)."""

# ruff: noqa: F811 - pytest fixtures imported from clusterkit are test parameters

from __future__ import annotations

import time

import nats
from clusterkit import live_rooms, nats_server, needs_nats, node  # noqa: F401 - fixtures
from relaytest_client import Group, RawClient, joined

from ghostline.protocol.frames import ErrorCode, FrameType, Hello, Port, join_statement
from ghostline.relay import RelayLimits, RelayServer, Retention
from ghostline.relay.cluster import ClusterConfig, NatsBackend
from ghostline.relay.cluster.layout import ROOMS_BUCKET
from ghostline.relay.config import DAY
from waiting import until

pytestmark = needs_nats

FULL = "relay full: too many rooms"


async def no_live_rooms(url: str) -> bool:
    return await live_rooms(url) == 0


async def one_live_room(url: str) -> bool:
    return await live_rooms(url) == 1


async def refused(port: int, group: Group, member: int = 0) -> tuple[int, str]:
    """(code, reason) of the ERROR a member's join gets."""
    client = await RawClient.connect(port)
    nonce = await client.hello(group, member)
    statement = join_statement(Port.RELAY, group.room, member, nonce)
    await client.send(FrameType.PROVE, group.keys[member].sign(statement))
    frame = await client.recv()
    await client.close()
    assert frame.type == FrameType.ERROR, frame
    return int.from_bytes(frame.body[:2], "big"), frame.body[2:].decode()


async def test_a_room_no_node_holds_is_retired_frees_its_place_and_keeps_its_roster(
    node, nats_server
):
    a, b = node("a", "--max-rooms", "1"), node("b", "--max-rooms", "1")
    first, second = Group(2), Group(2)
    on_a = await joined(a.relay_port, first, 0)
    on_b = await joined(b.relay_port, first, 1)
    watcher = await RawClient.connect(b.presence_port)  # held on b too, and it hears a
    await watcher.join(first, 1, port=Port.PRESENCE)
    assert await watcher.expect(FrameType.PRESENCE)
    assert await refused(a.relay_port, second) == (ErrorCode.RELAY_FULL, FULL)
    await on_a.close()
    frame = await watcher.recv()  # b has a's snapshot without the room: a let go of it
    assert (frame.type, frame.body) == (FrameType.OFFLINE, (0).to_bytes(2, "big"))
    assert await refused(b.relay_port, second) == (ErrorCode.RELAY_FULL, FULL)  # b holds it
    assert await live_rooms(nats_server.url) == 1
    await on_b.close()
    await watcher.close()
    await until(lambda: no_live_rooms(nats_server.url), what="the first room retired")
    other = await joined(a.relay_port, second, 0)  # its place is free
    # a node that never saw the retired room still knows its roster
    c = node("c", "--max-rooms", "1")
    impostor = Group(2, room=first.room)
    client = await RawClient.connect(c.relay_port)
    await client.send(FrameType.HELLO, Hello(first.room, 0, impostor.roster, 0).encode())
    await client.expect_error(ErrorCode.ROSTER_MISMATCH)
    # coming back, it counts again: not while the second room is live
    assert await refused(c.relay_port, first) == (ErrorCode.RELAY_FULL, FULL)
    await other.close()
    await until(lambda: no_live_rooms(nats_server.url), what="the second room retired")
    back = await joined(c.relay_port, first, 0)
    await back.close()


async def test_a_room_with_messages_stays_live_until_the_age_limit_empties_it(nats_server):
    backend = NatsBackend(ClusterConfig((nats_server.url,), "here"), Retention())
    server = RelayServer(backend, RelayLimits(max_rooms=1))
    await server.start("127.0.0.1", 0, 0)
    try:
        first, second = Group(2), Group(2)
        client = await joined(server.relay_port, first, 0)
        for counter in range(3):
            await client.publish(first.sealed(0, counter))
            assert await client.accepted() == (counter + 1, counter)
        await client.close()
        await until(lambda: first.room not in server.hub.rooms, what="the member gone")
        assert not await backend.registry.retire(first.room)  # it holds messages
        assert await refused(server.relay_port, second) == (ErrorCode.RELAY_FULL, FULL)
        assert await backend.expire(time.time() + 31 * DAY) == 3
        await until(lambda: no_live_rooms(nats_server.url), what="retired once emptied")
        other = await joined(server.relay_port, second, 0)  # its place is free
        await other.close()
        await until(lambda: no_live_rooms(nats_server.url), what="the second room retired")
        back = await RawClient.connect(server.relay_port)
        assert await back.join(first, 1) == 3  # its numbering goes on
        await back.close()
    finally:
        await server.close()


async def test_the_rooms_of_a_node_that_died_are_retired_by_the_others_or_at_its_restart(
    node, nats_server
):
    a, b = node("a"), node("b")
    on_a, on_b = Group(2), Group(2)
    held = [await joined(a.relay_port, on_a, 0), await joined(b.relay_port, on_b, 0)]
    assert await live_rooms(nats_server.url) == 2
    a.kill()  # b retires a's room once a is gone (8 s)
    await until(lambda: one_live_room(nats_server.url), 20, "a's room retired by b")
    b.kill()  # alone: nobody is left to retire b's room but b itself, restarted
    node("b")
    await until(lambda: no_live_rooms(nats_server.url), 30, "b's room retired at its restart")
    for client in held:
        await client.close()


async def test_a_damaged_roster_in_nats_refuses_that_rooms_joins_with_error_9_and_no_other(
    node, nats_server
):
    a = node("a")
    damaged, other = Group(2), Group(2)
    nc = await nats.connect(nats_server.url)
    try:  # 33 bytes: no whole number of verify keys (whoever can write the bucket can)
        kv = await nc.jetstream().key_value(ROOMS_BUCKET)
        await kv.put(damaged.room.hex(), bytes(33))
    finally:
        await nc.close()
    client = await RawClient.connect(a.relay_port)
    await client.send(FrameType.HELLO, Hello(damaged.room, 0, damaged.roster, 0).encode())
    assert await client.expect_error(ErrorCode.INTERNAL)
    await client.close()
    await until(
        lambda: any("event=internal_error" in line and damaged.room.hex() in line
                    and "stored roster" in line for line in a.stderr_lines),
        what="the damaged roster logged with its room",
    )  # fmt: skip
    member = await joined(a.relay_port, other, 0)  # other rooms are served
    await member.close()
