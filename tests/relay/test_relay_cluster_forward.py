"""Forwarding between two cluster nodes in this process over a real nats-server: the
shares of one commit for rooms of the same owner travel in one request, answered once,
and a request the owner cannot read is refused without hurting the owner; a room's owner
follows its holders, the node that retires it does not. (A killed owner's forwards
failing over: test_relay_cluster.py.)"""

# ruff: noqa: F811 - pytest fixtures imported from clusterkit are test parameters

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import cast

import nats
import pytest
from clusterkit import live_rooms, nats_server, needs_nats, synced, writers  # noqa: F401 - fixtures
from relaytest_client import Group, joined

from ghostline.relay import RelayLimits, RelayServer, Retention
from ghostline.relay.backend import Appended, Publish
from ghostline.relay.cluster import ClusterConfig, NatsBackend, forward, items
from ghostline.relay.cluster.layout import APPEND_SUBJECT
from waiting import until

pytestmark = needs_nats


@pytest.fixture
async def servers(nats_server) -> AsyncIterator[tuple[RelayServer, RelayServer]]:
    """Nodes "a" and "b", each knowing the other is alive."""
    servers, backends = [], []
    try:
        for name in "ab":
            backend = NatsBackend(ClusterConfig((nats_server.url,), name), Retention())
            server = RelayServer(backend, RelayLimits())
            await server.start("127.0.0.1", 0, 0)
            servers.append(server)
            backends.append(backend)
        a, b = backends
        await until(lambda: a.presence.nodes == ["b"] and b.presence.nodes == ["a"], 20, "peers")
        yield servers[0], servers[1]
    finally:
        for server in servers:
            await server.close()


@pytest.fixture
def nodes(servers) -> tuple[NatsBackend, NatsBackend]:
    return cast(NatsBackend, servers[0].backend), cast(NatsBackend, servers[1].backend)


def rooms_of(backend: NatsBackend, owner: str, count: int) -> list[bytes]:
    """`count` new rooms that `owner` owns in `backend`'s view."""
    found: list[bytes] = []
    while len(found) < count:
        room = os.urandom(16)
        if backend.ownership.owner(room) == owner:
            found.append(room)
    return found


async def test_the_rooms_of_one_commit_owned_by_another_node_go_to_it_in_one_request(
    nodes, nats_server
):
    a, b = nodes
    theirs, mine = rooms_of(a, "b", 3), rooms_of(a, "a", 1)
    spy = await nats.connect(nats_server.url)
    sub = await spy.subscribe(APPEND_SUBJECT + "b")
    await synced(spy)
    try:
        batch = [
            Publish(room, 1, counter, os.urandom(40))
            for counter in range(4)
            for room in (*theirs, *mine)
        ]
        results = await a.append(batch)
        assert results == [Appended(1 + counter, False) for counter in range(4) for _ in range(4)]
        request = await sub.next_msg(timeout=10)
        await synced(spy)  # whatever else was sent to b is in the spy's queue now
        assert sub.pending_msgs == 0  # one request for the three rooms, answered once
        shares = forward.decode_request(request.data)
        assert [room for room, _ in shares] == theirs
        assert [len(got) for _, got in shares] == [4, 4, 4]
        for room in (*theirs, *mine):
            stored = await b.read_after(room, 0)
            assert [m.sealed for m in stored] == [p.sealed for p in batch if p.room == room]
            assert [m.seq for m in stored] == [1, 2, 3, 4]
    finally:
        await spy.close()


async def test_shares_too_big_for_one_request_go_in_several(nodes, nats_server):
    a, b = nodes
    theirs = rooms_of(a, "b", 3)
    third = a.link.max_payload // 3  # two shares fit in one request, not three
    spy = await nats.connect(nats_server.url)
    sub = await spy.subscribe(APPEND_SUBJECT + "b")
    await synced(spy)
    try:
        batch = [Publish(room, 0, 0, os.urandom(third)) for room in theirs]
        assert await a.append(batch) == [Appended(1, False)] * 3
        requests = [await sub.next_msg(timeout=10) for _ in range(2)]
        await synced(spy)
        assert sub.pending_msgs == 0
        assert [[room for room, _ in forward.decode_request(r.data)] for r in requests] == [
            theirs[:2],
            theirs[2:],
        ]
        for publish in batch:
            assert [m.sealed for m in await b.read_after(publish.room, 0)] == [publish.sealed]
    finally:
        await spy.close()


async def test_a_forward_the_owner_cannot_read_is_answered_with_no_rooms_and_it_goes_on(
    nodes, nats_server
):
    a, b = nodes
    (room,) = rooms_of(a, "b", 1)
    good = forward.encode_request([(room, items.Items.of([Publish(room, 0, 0, b"x" * 30)]))])
    earlier_version = bytes([1]) + room + good[3 + 20 :]  # one room, no count, no length
    spy = await nats.connect(nats_server.url)
    try:
        for bad in (b"", good[:-1], good + b"\x00", earlier_version, b"\x02" + b"\xff" * 199):
            reply = await spy.request(APPEND_SUBJECT + "b", bad, timeout=10)
            assert reply.data == forward.encode_replies([])  # answers no request
        assert await b.read_after(room, 0) == []  # nothing of them stored
        reply = await spy.request(APPEND_SUBJECT + "b", good, timeout=10)
        assert forward.decode_replies(reply.data, 1) == [
            forward.encode_stored([Appended(1, False)])
        ]
        assert await a.append([Publish(room, 0, 1, b"y" * 30)]) == [Appended(2, False)]
        assert [m.sealed for m in await b.read_after(room, 0)] == [b"x" * 30, b"y" * 30]
    finally:
        await spy.close()


async def test_an_owner_answers_a_forward_before_it_fans_the_messages_out_to_its_own_members(
    nodes,
):
    a, b = nodes
    (room,) = rooms_of(a, "b", 1)
    events: list[str] = []
    answer, fan_out = b.link.publish_now, b.journal._on_stored

    def answering(subject: str, payload: bytes) -> None:
        events.append("answer")
        answer(subject, payload)

    def fanning_out(room: bytes, messages: list) -> None:
        events.append(f"fan-out of {[m.seq for m in messages]}")
        fan_out(room, messages)

    b.link.publish_now = answering  # type: ignore[method-assign]
    b.journal._on_stored = fanning_out
    assert await a.append([Publish(room, 1, 0, b"x" * 30)]) == [Appended(1, False)]
    # in that order, in one go: the other node's member waits for the answer
    assert events == ["answer", "fan-out of [1]"]


async def test_a_closing_owner_answers_a_forward_closing_so_the_forwarder_asks_the_next(
    nodes, nats_server
):
    a, b = nodes
    (room,) = rooms_of(a, "b", 1)
    request = forward.encode_request([(room, items.Items.of([Publish(room, 0, 0, b"x" * 30)]))])
    await b.journal.close()
    spy = await nats.connect(nats_server.url)
    try:
        reply = await spy.request(APPEND_SUBJECT + "b", request, timeout=10)
        assert forward.decode_replies(reply.data, 1) == [forward.encode_closing()]
        assert await a.read_after(room, 0) == []
    finally:
        await spy.close()


async def test_a_node_request_gets_its_answer_or_says_nobody_listens_or_nobody_answered(
    nodes, nats_server
):
    a, _ = nodes
    spy = await nats.connect(nats_server.url)
    try:

        async def echo(msg) -> None:
            await msg.respond(b"echo " + msg.data)

        await spy.subscribe("test.echo", cb=echo)
        await spy.subscribe("test.silent")
        await synced(spy)
        assert (await a.link.request("test.echo", b"one", 10)).data == b"echo one"
        assert (await a.link.request("test.echo", b"two", 10)).data == b"echo two"
        with pytest.raises(nats.errors.NoRespondersError):
            await a.link.request("test.nobody", b"", 10)
        with pytest.raises(nats.errors.TimeoutError):
            await a.link.request("test.silent", b"", 0.2)
        assert a.link._asked == {}  # no answer left waiting
    finally:
        await spy.close()


async def test_an_answer_given_while_nats_is_away_goes_out_once_the_node_is_back(
    nodes, nats_server
):
    a, _ = nodes
    assert a.link.nc is not None
    got: list[bytes] = []

    async def heard(msg) -> None:
        got.append(msg.data)

    await a.link.nc.subscribe("test.later", cb=heard)  # this node hears its own publish
    nats_server.kill()
    await until(lambda: not a.link.up, 20, "node a sees NATS gone")
    a.link.publish_now("test.later", b"kept")
    nats_server.start()
    await until(lambda: got == [b"kept"], 30, "the answer, once reconnected")


async def test_a_room_held_on_one_node_only_is_written_there_and_nothing_is_forwarded(
    servers, nats_server
):
    """Ownership follows the rooms' members: a room's owner is chosen among the nodes
    that hold it, so a group whose members all use one node costs no forwarding."""
    a, b = servers
    group = Group(2)
    while cast(NatsBackend, a.backend).ownership.owner(group.room) != "b":
        group = Group(2)  # b owns it by the hash over all nodes
    spy = await nats.connect(nats_server.url)
    forwards = await spy.subscribe(APPEND_SUBJECT + "b")
    await synced(spy)
    try:
        first = await joined(a.relay_port, group, 0)
        second = await joined(a.relay_port, group, 1)
        for counter in range(3):
            await first.publish(group.sealed(0, counter))
            assert await first.accepted() == (counter + 1, counter)
        await synced(spy)
        assert forwards.pending_msgs == 0  # held on a only: a wrote it
        assert await writers(nats_server.url, group.room) == ["a"] * 3
        on_b = await joined(b.relay_port, group, 1)  # now held on both: b's by the hash
        await until(
            lambda: (
                b.backend.presence.holds("b", group.room)
                and a.backend.presence.holds("b", group.room)
            ),
            what="a hears b holds it",
        )
        await first.publish(group.sealed(0, 3))
        assert await first.accepted() == (4, 3)
        assert await forwards.next_msg(timeout=10)  # forwarded to b, which wrote it
        assert await writers(nats_server.url, group.room) == ["a"] * 3 + ["b"]
        for client in (first, second, on_b):
            await client.close()
    finally:
        await spy.close()


async def test_a_hold_that_raced_with_a_retirement_is_made_live_again_though_its_holder_now_owns_it(
    servers, nats_server, monkeypatch
):
    """A room's writer follows its holders, the node that retires it does not: b holds
    a room whose snapshot has not reached a yet, and a (first by the hash over all
    nodes) retires it meanwhile; when b's snapshot arrives, b writes the room, but a
    still makes it live again, so it counts against --max-rooms while b holds it."""
    a, b = (cast(NatsBackend, server.backend) for server in servers)
    group = Group(2)
    while a.ownership.owner(group.room) != "a":
        group = Group(2)

    async def on_its_way() -> None:
        b.presence._snapshot_due = False

    monkeypatch.setattr(b.presence, "_send_snapshot", on_its_way)
    member = await joined(servers[1].relay_port, group, 0)
    try:
        assert await live_rooms(nats_server.url) == 1
        assert not a.presence.holds("b", group.room)
        assert await a.registry.retire(group.room)  # the race: b's hold written, not heard
        assert await live_rooms(nats_server.url) == 0
        monkeypatch.undo()
        b.presence.schedule_snapshot()  # b's snapshot arrives
        await until(lambda: a.presence.holds("b", group.room), what="a hears b holds it")
        assert a.ownership.owner(group.room) == "b"  # its only holder writes it
        await until(lambda: _counted(nats_server.url), what="the held room counted again")
    finally:
        await member.close()


async def _counted(url: str) -> bool:
    return await live_rooms(url) == 1
