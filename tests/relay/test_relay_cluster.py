"""Cluster mode: `ghostline relay --cluster` nodes sharing rooms through a real nats-server
(JetStream, fsync on every write) on a loopback port. Relays are real processes; nodes
and nats-server are SIGKILLed mid-traffic."""

# ruff: noqa: F811 - pytest fixtures imported from clusterkit are test parameters

from __future__ import annotations

import asyncio
import os
import signal
import time

from clusterkit import (  # noqa: F401 - fixtures
    Member,
    assert_room_exact,
    logged,
    nats_server,
    needs_nats,
    node,
    read_all,
    writers,
)
from relaytest_client import Group, RawClient, joined

from ghostline.protocol.frames import ErrorCode, FrameType, Hello, Port, Welcome, join_statement
from ghostline.relay.cluster import score
from ghostline.relay.cluster.link import STALL_LIMIT
from waiting import until

pytestmark = needs_nats


async def test_messages_fan_out_across_three_nodes_with_one_numbering(node):
    nodes = [node(name) for name in "abc"]
    group = Group(3)
    members = [Member(group, i, [nodes[i].relay_port]) for i in range(3)]
    for m in members:
        await m.connect()
    for _ in range(5):
        await asyncio.gather(*(m.publish(8) for m in members))
        await asyncio.sleep(0.01)
    await until(lambda: all(m.all_accepted() for m in members), what="all accepted")
    total = sum(len(m.outbox) for m in members)
    seqs = sorted(s for m in members for s in m.accepted.values())
    assert seqs == list(range(1, total + 1))  # one numbering, no gap, no double
    for m in members:
        own = set(m.accepted.values())
        await until(lambda m=m, own=own: len(m.delivered) == total - len(own), what="fan-out")
        got = [s for s, _ in m.delivered]
        assert got == sorted(set(range(1, total + 1)) - own)  # in order, every other one
    # every node serves the same room, in the same order
    views = [await read_all(n.relay_port, group) for n in nodes]
    assert views[0] == views[1] == views[2]
    assert_room_exact(views[0], members)
    # resume from another node with any cursor gives exactly what follows it
    for cursor in (0, 7, total - 1, total):
        client = await joined(nodes[(cursor + 1) % 3].relay_port, group, 1, resume_after=cursor)
        got = [await client.deliver() for _ in range(total - cursor)]
        assert got == views[0][cursor:]
        await client.send(FrameType.PING, b"end")  # nothing more comes before its PONG
        assert await client.expect(FrameType.PONG) == b"end"
        await client.close()
    for m in members:
        await m.close()


async def test_a_roster_registered_on_one_node_binds_on_every_node(node):
    a, b = node("a"), node("b")
    group = Group(3)
    client = await joined(a.relay_port, group, 0)
    impostor = Group(3, room=group.room)
    other = await RawClient.connect(b.relay_port)
    await other.send(FrameType.HELLO, Hello(group.room, 0, impostor.roster, 0).encode())
    await other.expect_error(ErrorCode.ROSTER_MISMATCH)
    other_member = await joined(b.relay_port, group, 1)  # the same roster binds on b
    await other_member.close()
    await client.close()


async def test_every_node_of_a_cluster_names_the_same_store(node):
    a, b = node("a"), node("b")
    group = Group(2)
    on_a, on_b = await joined(a.relay_port, group, 0), await joined(b.relay_port, group, 1)
    assert len(on_a.store_id) == 16 and on_a.store_id == on_b.store_id
    await on_a.close()
    await on_b.close()


async def test_a_resend_to_another_node_gets_the_original_seqs(node):
    a, b, c = node("a"), node("b"), node("c")
    group = Group(3)
    reader = Member(group, 2, [c.relay_port])
    await reader.connect()
    sender = Member(group, 0, [a.relay_port])
    await sender.connect()
    await sender.publish(5)
    await until(sender.all_accepted, what="first five accepted")
    first = dict(sender.accepted)
    await sender.close()
    # failover: the whole outbox goes again, to node b, plus one new message
    again = Member(group, 0, [b.relay_port])
    again.outbox, again.next_counter = dict(sender.outbox), 5
    again.cursor = 5
    await again.connect()
    for counter in range(5):
        await again.client.publish(sender.outbox[counter])  # type: ignore[union-attr]
    await again.publish(1)
    await until(lambda: len(again.accepted) == 6, what="resends answered")
    assert {k: again.accepted[k] for k in range(5)} == first
    assert again.accepted[5] == 6
    await again.publish(1)  # a last one: the reader gets it after anything earlier
    await until(lambda: len(reader.delivered) >= 7, what="reader")
    assert [s for s, _ in reader.delivered] == [1, 2, 3, 4, 5, 6, 7]  # nothing twice
    await again.close()
    await reader.close()


async def _presence(port: int, group: Group, member: int) -> RawClient:
    watcher = await RawClient.connect(port)
    await watcher.join(group, member, port=Port.PRESENCE)
    await watcher.expect(FrameType.PRESENCE)
    return watcher


async def _changes(watcher: RawClient, count: int, timeout: float) -> list[tuple[int, int]]:
    out = []
    for _ in range(count):
        frame = await watcher.recv(timeout)
        out.append((frame.type, int.from_bytes(frame.body, "big")))
    return out


async def test_presence_is_cluster_wide(node):
    a, b = node("a"), node("b")
    group = Group(3)
    watcher = await _presence(b.presence_port, group, 2)
    m0 = await joined(a.relay_port, group, 0)
    assert await _changes(watcher, 1, 5) == [(FrameType.ONLINE, 0)]
    m1 = await joined(b.relay_port, group, 1)
    assert await _changes(watcher, 1, 5) == [(FrameType.ONLINE, 1)]
    second = await joined(b.relay_port, group, 0)  # online on two nodes at once
    await m0.close()  # still online through node b: no change is announced
    await second.close()
    assert await _changes(watcher, 1, 5) == [(FrameType.OFFLINE, 0)]  # the next change
    await m1.close()
    assert await _changes(watcher, 1, 5) == [(FrameType.OFFLINE, 1)]
    await watcher.close()


async def test_a_node_killed_mid_traffic_loses_nothing_and_its_members_go_offline(node):
    a, b = node("a"), node("b")
    group = Group(3)
    watcher = await _presence(b.presence_port, group, 2)
    reader = Member(group, 2, [b.relay_port])
    await reader.connect()
    members = [Member(group, i, [a.relay_port, b.relay_port]) for i in range(2)]
    for m in members:
        await m.connect()
    assert sorted(await _changes(watcher, 3, 5)) == [(FrameType.ONLINE, i) for i in range(3)]

    async def pump(m: Member, rounds: int) -> None:
        for _ in range(rounds):
            await m.publish(10)
            await asyncio.sleep(0.005)

    pumps = [asyncio.ensure_future(pump(m, 60)) for m in members]
    await until(lambda: sum(len(m.accepted) for m in members) >= 200, what="traffic")
    killed_at = time.monotonic()
    a.kill()
    changes = await _changes(watcher, 2, 15)
    assert sorted(changes) == [(FrameType.OFFLINE, 0), (FrameType.OFFLINE, 1)]
    assert time.monotonic() - killed_at < 10.5  # DEAD_AFTER 8 s + 1 s sweep, documented
    await asyncio.gather(*pumps)
    for m in members:  # their clients fail over to node b and resend their outbox
        await until(lambda m=m: not m.connected, what="disconnect seen")
        await m.connect()
    await until(lambda: all(m.all_accepted() for m in members), 20, "all accepted after failover")
    stored = await read_all(b.relay_port, group)
    assert len(stored) == sum(len(m.outbox) for m in members)
    assert_room_exact(stored, members)
    await until(lambda: reader.cursor == len(stored), what="live reader caught up")
    assert reader.delivered == stored
    for m in [*members, reader]:
        await m.close()
    await watcher.close()


async def test_a_short_nats_outage_pauses_publishes_and_a_long_one_refuses_them(node, nats_server):
    """Appends, and the reads of a join, wait for NATS for up to STALL_LIMIT seconds: a
    restart within that goes unnoticed by members; a longer outage ends in ERROR 9, and
    nothing ACCEPTED is lost either way."""
    a, b = node("a"), node("b")
    group = Group(3)
    ports = [a.relay_port, b.relay_port]
    members = [Member(group, i, ports[i:] + ports[:i]) for i in range(3)]
    for m in members:
        await m.connect()

    async def pump(m: Member, rounds: int) -> None:
        for _ in range(rounds):
            await m.publish(5)
            await asyncio.sleep(0.01)

    pumps = [asyncio.ensure_future(pump(m, 40)) for m in members]
    await until(lambda: sum(len(m.accepted) for m in members) >= 150, what="traffic")
    nats_server.kill()
    await until(lambda: logged(a, "nats_disconnected"), what="node a sees NATS go")
    nats_server.start()
    await asyncio.gather(*pumps)
    await until(lambda: all(m.all_accepted() for m in members), 30, "all accepted after restart")
    assert all(m.connected for m in members) and not any(m.errors for m in members)

    pumps = [asyncio.ensure_future(pump(m, 40)) for m in members]
    await until(lambda: sum(len(m.accepted) for m in members) >= 700, what="more traffic")
    nats_server.kill()
    # A node stores one commit at a time (docs/DEPLOYMENT.md): a publish read just after
    # the kill waits behind the stalled commit, then STALL_LIMIT in its own.
    await until(
        lambda: not any(m.connected for m in members), 2 * STALL_LIMIT + 15, "refused while down"
    )
    assert all(ErrorCode.INTERNAL in m.errors for m in members)
    nats_server.start()
    await asyncio.gather(*pumps)
    for m in members:
        await m.connect(30)
    await until(lambda: all(m.all_accepted() for m in members), 30, "all accepted after outage")
    # every member may have failed over to one node: the other reconnects by itself
    await until(lambda: all(_back_on_nats(n) for n in (a, b)), 30, "both nodes back on NATS")
    views = [await read_all(p, group) for p in ports]
    assert views[0] == views[1]
    assert_room_exact(views[0], members)
    for m in members:
        await m.close()


async def _hello_and_prove(port: int, group: Group, member: int) -> RawClient:
    """A member's HELLO and PROVE sent (CHALLENGE may wait for NATS); what the relay
    answers next is left to the caller."""
    client = await RawClient.connect(port)
    await client.send(FrameType.HELLO, Hello(group.room, member, group.roster, 0).encode())
    nonce = await client.expect(FrameType.CHALLENGE, STALL_LIMIT)
    statement = join_statement(Port.RELAY, group.room, member, nonce)
    await client.send(FrameType.PROVE, group.keys[member].sign(statement))
    return client


async def test_members_joining_while_nats_restarts_are_welcomed_once_it_is_back(node, nats_server):
    """The reads of a join (the roster of a room this node has not seen yet; the head
    and the replay) wait for NATS like writes do: a short outage only delays WELCOME."""
    a, b = node("a"), node("b")
    group = Group(3)
    first = Member(group, 0, [a.relay_port])
    await first.connect()
    await first.publish(1)
    await until(first.all_accepted, what="one message stored")
    nats_server.kill()
    await until(lambda: logged(a, "nats_disconnected") and logged(b, "nats_disconnected"))
    # on b the room is new: its roster is looked up in NATS before CHALLENGE
    on_b = asyncio.ensure_future(_hello_and_prove(b.relay_port, group, 1))
    on_a = await _hello_and_prove(a.relay_port, group, 2)  # known here: the head waits
    nats_server.start()
    for client in (on_a, await asyncio.wait_for(on_b, STALL_LIMIT)):
        assert Welcome.decode(await client.expect(FrameType.WELCOME, STALL_LIMIT)).head == 1
        assert await client.deliver(STALL_LIMIT) == (1, first.outbox[0])
        await client.close()
    await first.close()


async def test_a_join_kept_waiting_by_nats_past_the_handshake_timeout_gets_error_9(
    node, nats_server
):
    """The relay, not the member, was late: a refusal its client retries (ERROR 9), not
    ERROR 3, which a client takes as its own mistake."""
    a = node("a", "--handshake-timeout", "1")
    group = Group(2)
    nats_server.kill()
    await until(lambda: logged(a, "nats_disconnected"), what="node a sees NATS go")
    client = await RawClient.connect(a.relay_port)
    await client.send(FrameType.HELLO, Hello(group.room, 0, group.roster, 0).encode())
    reason = await client.expect_error(ErrorCode.INTERNAL)
    assert reason == "the relay's store did not answer in time"


def _back_on_nats(relay) -> bool:
    """Whether `relay` reconnected to NATS after each time it lost it."""
    lines = relay.stderr_lines
    return sum("event=nats_reconnected" in x for x in lines) == sum(
        "event=nats_disconnected" in x for x in lines
    )


async def _shorten_duplicate_window(url: str, seconds: float) -> None:
    """Make JetStream's own (time-limited) duplicate detection irrelevant to the test."""
    import nats  # the test's own NATS client, not the relay's

    nc = await nats.connect(url)
    js = nc.jetstream()
    for info in await js.streams_info():
        if info.config.name.startswith("GHOSTLINE-"):
            info.config.duplicate_window = seconds
            await js.update_stream(info.config)
    await nc.close()


async def test_a_resend_long_after_the_duplicate_window_still_gets_the_original_seqs(
    node, nats_server
):
    a, b = node("a"), node("b")
    await _shorten_duplicate_window(nats_server.url, 0.5)
    group = Group(3)
    sender = Member(group, 0, [a.relay_port])
    await sender.connect()
    await sender.publish(4)
    await until(sender.all_accepted, what="first four accepted")
    first = dict(sender.accepted)
    await sender.close()
    other = Member(group, 1, [b.relay_port])  # the room moves on meanwhile
    await other.connect()
    await other.publish(3)
    await until(other.all_accepted, what="others accepted")
    await asyncio.sleep(1.2)  # well past JetStream's duplicate window
    # the same outbox, resent to the other node, mixed with a new message in one go
    again = Member(group, 0, [b.relay_port])
    again.outbox, again.next_counter, again.cursor = dict(sender.outbox), 4, 7
    await again.connect()
    for counter in (2, 0, 3, 1, 3):
        await again.client.publish(sender.outbox[counter])  # type: ignore[union-attr]
    await again.publish(1)
    await until(lambda: len(again.accepted) == 5, what="resends answered")
    assert {k: again.accepted[k] for k in range(4)} == first
    assert again.accepted[4] == 8
    stored = await read_all(a.relay_port, group)
    assert [s for s, _ in stored] == list(range(1, 9))  # nothing stored twice
    assert_room_exact(stored, [again, other])
    await again.close()
    await other.close()


async def test_byte_retention_keeps_the_newest_within_the_limit_on_every_node(node):
    limit = 3000
    a, b = node("a", "--retain-bytes", str(limit)), node("b", "--retain-bytes", str(limit))
    group = Group(3)
    members = [Member(group, i, [(a, b)[i].relay_port]) for i in range(2)]
    for m in members:
        await m.connect()
    for _ in range(6):
        await asyncio.gather(*(m.publish(3, size=200) for m in members))
        await asyncio.sleep(0.02)
    await until(lambda: all(m.all_accepted() for m in members), what="all accepted")
    total = sum(len(m.outbox) for m in members)
    size = len(members[0].outbox[0])
    keep = limit // size
    for port in (a.relay_port, b.relay_port):  # resume from scratch: only the newest
        client = await joined(port, group, 2)
        got = [await client.deliver() for _ in range(keep)]  # (a held older one comes first)
        await client.close()
        assert [s for s, _ in got] == list(range(total - keep + 1, total + 1))
        assert sum(len(body) for _, body in got) <= limit
    # numbering goes on after trimming
    await members[0].publish(1, size=200)
    await until(members[0].all_accepted, what="one more")
    assert members[0].accepted[max(members[0].outbox)] == total + 1
    for m in members:
        await m.close()


async def test_the_owner_killed_while_another_node_forwards_loses_nothing(node, nats_server):
    """One writer per room: the node that does not own the room forwards its appends to
    the owner. SIGKILL the owner while it holds forwards it never answers: the other
    node sees it left NATS, passes it over and stores the room itself (without waiting
    for the forwards' timeout), its members never see an error, and nothing ACCEPTED is
    lost."""

    group = Group(3)
    names = sorted("ab", key=lambda n: score(group.room, n))
    other, owner = node(names[0]), node(names[1])  # the owner by rendezvous hashing
    await until(
        lambda: logged(other, "cluster_node_joined") and logged(owner, "cluster_node_joined")
    )
    # (each has heard from the other: they agree on the owner)
    reader = Member(group, 2, [other.relay_port])
    await reader.connect()
    forwarded = Member(group, 1, [other.relay_port])
    await forwarded.connect()
    local = Member(group, 0, [owner.relay_port, other.relay_port])
    await local.connect()
    stop = asyncio.Event()

    async def pump(m: Member) -> None:
        for _ in range(2000):
            if stop.is_set():
                return
            await m.publish(5)
            await asyncio.sleep(0.01)

    pumps = [asyncio.ensure_future(pump(forwarded)), asyncio.ensure_future(pump(local))]
    await until(
        lambda: len(forwarded.accepted) >= 100 and len(local.accepted) >= 50, what="traffic"
    )
    os.kill(owner.proc.pid, signal.SIGSTOP)  # frozen: what it is forwarded stays unanswered
    sent = len(forwarded.outbox)
    await until(lambda: len(forwarded.outbox) >= sent + 10, what="forwards to the frozen owner")
    owner.kill()
    killed = len(forwarded.outbox)
    await until(lambda: len(forwarded.outbox) >= killed + 10, what="traffic after the kill")
    stop.set()
    await asyncio.gather(*pumps)
    await until(lambda: not local.connected, what="disconnect seen")
    await local.connect()  # fails over to the other node and resends its outbox
    await until(lambda: forwarded.all_accepted() and local.all_accepted(), 20, "all accepted")
    gone = [x for x in other.stderr_lines if "event=cluster_owner_gone" in x]
    assert gone and not any("TimeoutError" in x for x in gone), gone
    assert forwarded.connected and not forwarded.errors  # the failover was invisible to it
    stored = await read_all(other.relay_port, group)
    assert len(stored) == len(forwarded.outbox) + len(local.outbox)
    assert_room_exact(stored, [forwarded, local])
    await until(lambda: reader.cursor == len(stored), what="live reader caught up")
    assert reader.delivered == stored
    for m in (forwarded, local, reader):
        await m.close()
    # one writer at a time: the owner stored everything until it died, then the other node
    order = await writers(nats_server.url, group.room)
    assert len(order) == len(stored)
    assert [w for i, w in enumerate(order) if i == 0 or order[i - 1] != w] == names[::-1]
