"""What the cluster keeps in JetStream: rooms spread over a fixed number of streams, the
layouts it refuses, exact duplicate detection (counter tops and late receipts) and
retention by count and age. Real nats-server, real relay processes (and, for the age
limit, a relay in this process so the test can move its clock)."""

# ruff: noqa: F811 - pytest fixtures imported from clusterkit are test parameters

from __future__ import annotations

import subprocess
import sys
import time

import nats
from clusterkit import (  # noqa: F401 - fixtures
    Member,
    assert_room_exact,
    nats_server,
    needs_nats,
    node,
    read_all,
    writers,
)
from relaytest_client import Group, RawClient, joined

from ghostline.protocol.frames import FrameType
from ghostline.relay import RelayLimits, RelayServer, Retention
from ghostline.relay.cluster import ClusterConfig, NatsBackend
from ghostline.relay.cluster.layout import CLUSTER_BUCKET, STREAMS_KEY, Layout
from ghostline.relay.config import DAY
from waiting import until

pytestmark = needs_nats


def _refusal(url: str, *args: str) -> list[str]:
    """Run `ghostline relay --cluster URL ARGS`, which must exit 1; its stderr lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "ghostline", "relay", "--port", "0", "--presence-port", "0",
         "--cluster", url, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    return proc.stderr.splitlines()


async def test_rooms_spread_over_the_streams_the_cluster_was_created_with(node, nats_server):
    a = node("a", "--cluster-streams", "4")
    layout = Layout(4, b"")
    groups: dict[int, Group] = {}
    while len(groups) < 4:  # one room in each stream
        group = Group(2)
        groups.setdefault(layout.stream_of(group.room), group)
    members = [Member(g, 0, [a.relay_port]) for g in groups.values()]
    for m in members:
        await m.connect()
        await m.publish(3)
    await until(lambda: all(m.all_accepted() for m in members), what="all accepted")
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    assert (await (await js.key_value(CLUSTER_BUCKET)).get(STREAMS_KEY)).value == b"4"
    names = sorted(i.config.name for i in await js.streams_info())
    assert [n for n in names if n.startswith("GHOSTLINE")] == [f"GHOSTLINE-{k}" for k in range(4)]
    for k, group in groups.items():
        stored = (await js.stream_info(f"GHOSTLINE-{k}")).state.messages
        assert stored >= 1 and await writers(nats_server.url, group.room) == ["a"] * 3
    await nc.close()
    # the count is the cluster's: another node may not change it, and need not give it
    (line,) = _refusal(nats_server.url, "--node-name", "b", "--cluster-streams", "6")
    assert line.startswith("ghostline: error: ") and "4 streams" in line
    c = node("c")
    other = Member(list(groups.values())[0], 1, [c.relay_port])
    await other.connect()
    await other.publish(1)
    await until(other.all_accepted, what="node c stores in the 4 streams")
    for m in [*members, other]:
        await m.close()


async def test_a_one_stream_cluster_of_an_earlier_version_is_refused_in_one_line(nats_server):
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(name="GHOSTLINE", subjects=["ghostline.room.*"])
    await nc.close()
    (line,) = _refusal(nats_server.url, "--node-name", "a")
    assert line.startswith("ghostline: error: ") and "GHOSTLINE" in line


async def test_a_sender_out_of_counter_order_is_stored_once_and_resends_get_their_seqs(node):
    a, b = node("a"), node("b")
    group = Group(3)
    sender = Member(group, 0, [a.relay_port])
    await sender.connect()
    for counter in (5, 2, *range(6, 16)):  # 2 comes after 5; one commit each
        sender.next_counter = counter
        await sender.publish(1)
        await until(lambda c=counter: c in sender.accepted, what=f"counter {counter}")
    first = dict(sender.accepted)
    assert first[5] == 1 and first[2] == 2 and first[9] == 6
    await sender.close()
    again = await joined(b.relay_port, group, 0, resume_after=12)  # the node that may forward
    for counter in (2, 5, 9, 15):  # a late one, the first, one in a middle chunk, the last
        await again.publish(sender.outbox[counter])
        assert await again.accepted() == (first[counter], counter)
    await again.publish(group.sealed(0, 3))  # new, but below its sender's top: a late one
    assert await again.accepted() == (13, 3)
    await again.publish(group.sealed(0, 3))  # and found again by its receipt
    assert await again.accepted() == (13, 3)
    await again.publish(group.sealed(0, 16))
    assert await again.accepted() == (14, 16)  # the resend of 3 took no seq
    await again.close()
    stored = await read_all(a.relay_port, group, 1)
    assert [s for s, _ in stored] == list(range(1, 15))
    assert len({body for _, body in stored}) == 14


async def test_count_retention_keeps_the_newest_and_a_removed_message_is_stored_anew(
    node, nats_server
):
    a, b = node("a", "--retain-messages", "5"), node("b", "--retain-messages", "5")
    group = Group(2)
    sender = Member(group, 0, [a.relay_port])
    await sender.connect()
    for _ in range(12):
        await sender.publish(1)
        await until(lambda: sender.all_accepted(), what="accepted")
    for port in (a.relay_port, b.relay_port):  # from scratch: only the newest five
        assert [s for s, _ in await _held(port, group, 5)] == [8, 9, 10, 11, 12]
    # and storage follows: the owner purges the chunks (one per message here) below them
    nc = await nats.connect(nats_server.url)
    layout = Layout(
        int((await (await nc.jetstream().key_value(CLUSTER_BUCKET)).get(STREAMS_KEY)).value or b""),
        b"",
    )

    async def purged() -> bool:
        info = await nc.jetstream().stream_info(
            layout.stream(group.room), subjects_filter=layout.room_subject(group.room)
        )
        return info.state.messages <= 6

    # (purging runs after the append that crossed the limit)
    await until(purged, what="the room's chunks purged down to the newest")
    await nc.close()
    await sender.close()
    resend = await joined(b.relay_port, group, 0, resume_after=12)
    await resend.publish(sender.outbox[0])  # removed by retention: stored anew
    assert await resend.accepted() == (13, 0)
    await resend.publish(sender.outbox[10])  # still held: its stored seq
    assert await resend.accepted() == (11, 10)
    held = await _held(a.relay_port, group, 5)
    assert [s for s, _ in held] == [9, 10, 11, 12, 13] and held[-1][1] == sender.outbox[0]
    await resend.close()


async def _held(port: int, group: Group, count: int) -> list[tuple[int, bytes]]:
    """What a member resuming from scratch gets: `count` messages, then nothing more."""
    client = await joined(port, group, 1)
    got = [await client.deliver() for _ in range(count)]
    await client.send(FrameType.PING, b"end")  # nothing more comes before its PONG
    assert await client.expect(FrameType.PONG) == b"end"
    await client.close()
    return got


async def test_the_age_limit_empties_a_room_but_its_numbering_and_counters_go_on(nats_server):
    backend = NatsBackend(ClusterConfig((nats_server.url,), "here"), Retention())
    server = RelayServer(backend, RelayLimits())
    await server.start("127.0.0.1", 0, 0)
    try:
        group = Group(2)
        client = await joined(server.relay_port, group, 0)
        for counter in range(3):
            await client.publish(group.sealed(0, counter))
            assert await client.accepted() == (counter + 1, counter)
        assert await backend.expire(time.time() + 31 * DAY) == 3
        fresh = await RawClient.connect(server.relay_port)
        assert await fresh.join(group, 1) == 3  # the head stays, with nothing held
        await client.publish(group.sealed(0, 3))  # numbering goes on after the marker
        assert await client.accepted() == (4, 3)
        await client.publish(group.sealed(0, 1))  # aged out: stored anew
        assert await client.accepted() == (5, 1)
        await client.publish(group.sealed(0, 3))  # held: its stored seq
        assert await client.accepted() == (4, 3)
        assert [await fresh.deliver() for _ in range(2)] == [
            (4, group.sealed(0, 3)),
            (5, group.sealed(0, 1)),
        ]
        await client.close()
        await fresh.close()
    finally:
        await server.close()
