"""Presence port: a snapshot after WELCOME, then ONLINE/OFFLINE transitions."""

from __future__ import annotations

from relaytest_client import Group, RawClient, joined

from ghostline.protocol.frames import FrameType, Port, decode_member, decode_presence
from waiting import until


async def watch(relay, group: Group, member: int) -> tuple[RawClient, tuple[int, ...]]:
    client = await RawClient.connect(relay.presence_port)
    await client.join(group, member, port=Port.PRESENCE)
    return client, decode_presence(await client.expect(FrameType.PRESENCE))


async def test_the_snapshot_lists_who_holds_a_relay_connection(relay):
    group = Group(4)
    a = await joined(relay.relay_port, group, 3)
    b = await joined(relay.relay_port, group, 1)
    watcher, online = await watch(relay, group, 0)
    assert online == (1, 3)
    await a.close()
    await b.close()


async def test_a_presence_connection_alone_does_not_make_a_member_online(relay):
    group = Group(2)
    _, online = await watch(relay, group, 0)
    assert online == ()
    _, online = await watch(relay, group, 1)
    assert online == ()


async def test_members_coming_and_going_are_announced(relay):
    group = Group(3)
    watcher, online = await watch(relay, group, 0)
    assert online == ()
    b = await joined(relay.relay_port, group, 1)
    assert decode_member(await watcher.expect(FrameType.ONLINE)) == 1
    c = await joined(relay.relay_port, group, 2)
    assert decode_member(await watcher.expect(FrameType.ONLINE)) == 2
    await b.close()
    assert decode_member(await watcher.expect(FrameType.OFFLINE)) == 1
    await c.close()
    assert decode_member(await watcher.expect(FrameType.OFFLINE)) == 2


async def test_a_member_with_two_connections_goes_offline_when_the_last_closes(relay):
    group = Group(2)
    watcher, _ = await watch(relay, group, 0)
    first = await joined(relay.relay_port, group, 1)
    assert decode_member(await watcher.expect(FrameType.ONLINE)) == 1
    second = await joined(relay.relay_port, group, 1)
    await first.close()
    await until(lambda: len(relay.connections) == 2, what="the relay saw first go")
    await watcher.expect_nothing()  # no OFFLINE: second is still there
    await second.close()
    assert decode_member(await watcher.expect(FrameType.OFFLINE)) == 1


async def test_a_connection_refused_mid_session_goes_offline(relay):
    group = Group(2)
    watcher, _ = await watch(relay, group, 0)
    b = await joined(relay.relay_port, group, 1)
    assert decode_member(await watcher.expect(FrameType.ONLINE)) == 1
    await b.publish(b"junk")
    await b.expect_closed()
    assert decode_member(await watcher.expect(FrameType.OFFLINE)) == 1


async def test_rooms_do_not_see_each_other(relay):
    g1, g2 = Group(2), Group(2)
    watcher, _ = await watch(relay, g1, 0)
    other = await joined(relay.relay_port, g2, 1)  # welcomed after its ONLINE went out
    await watcher.expect_nothing()
    await other.close()


async def test_ping_works_on_the_presence_port(relay):
    watcher, _ = await watch(relay, Group(2), 0)
    await watcher.send(FrameType.PING, b"hi")
    assert await watcher.expect(FrameType.PONG) == b"hi"
