"""PUBLISH, ACCEPTED, DELIVER, resume, dedupe, retention, limits and backpressure."""

from __future__ import annotations

import asyncio
import ssl
import struct
import time

import pytest
from relaytest_client import Group, RawClient, RelayError, joined

from ghostline.protocol.frames import REASON_TLS_ONLY, ErrorCode, FrameType
from ghostline.relay import Retention
from helpers import self_signed_certificate
from waiting import until


async def test_a_publish_is_accepted_and_delivered_to_every_other_member_only(relay):
    group = Group(3)
    a, b, c = [await joined(relay.relay_port, group, i) for i in range(3)]
    sealed = group.sealed(0, 0, b"first")
    await a.publish(sealed)
    assert await a.accepted() == (1, 0)
    assert await b.deliver() == (1, sealed)
    assert await c.deliver() == (1, sealed)
    await a.expect_nothing()
    for client in (a, b, c):
        await client.close()


async def test_a_second_connection_of_the_same_member_gets_the_delivery(relay):
    group = Group(2)
    a1 = await joined(relay.relay_port, group, 0)
    a2 = await joined(relay.relay_port, group, 0)
    sealed = group.sealed(0, 0)
    await a1.publish(sealed)
    await a1.accepted()
    assert await a2.deliver() == (1, sealed)
    await a1.close()
    await a2.close()


async def test_sequence_numbers_are_per_room_and_gap_free(relay):
    g1, g2 = Group(2), Group(2)
    a = await joined(relay.relay_port, g1, 0)
    b = await joined(relay.relay_port, g2, 0)
    for counter in range(5):
        await a.publish(g1.sealed(0, counter))
        await b.publish(g2.sealed(0, counter))
    assert [(await a.accepted())[0] for _ in range(5)] == [1, 2, 3, 4, 5]
    assert [(await b.accepted())[0] for _ in range(5)] == [1, 2, 3, 4, 5]
    c = await RawClient.connect(relay.relay_port)
    assert await c.join(g1, 1) == 5
    await c.close()


async def test_a_duplicate_is_accepted_with_its_stored_seq_and_not_fanned_out(relay):
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    b = await joined(relay.relay_port, group, 1)
    await a.publish(group.sealed(0, 7, b"x"))
    assert await a.accepted() == (1, 7)
    assert (await b.deliver())[0] == 1
    await a.publish(group.sealed(0, 8, b"y"))
    await a.publish(group.sealed(0, 7, b"x"))  # resent, e.g. after a reconnect
    assert await a.accepted() == (2, 8)
    assert await a.accepted() == (1, 7)
    assert (await b.deliver())[0] == 2
    await b.expect_nothing()
    # a duplicate inside one batch (one read) too
    await a.send_raw(
        b"".join(
            struct.pack(">IB", len(s) + 1, FrameType.PUBLISH) + s
            for s in (group.sealed(0, 9), group.sealed(0, 9))
        )
    )
    assert await a.accepted() == (3, 9)
    assert await a.accepted() == (3, 9)
    assert (await b.deliver())[0] == 3
    await b.expect_nothing()


@pytest.mark.parametrize(
    "change",
    [
        {"pad_id": bytes(16)},
        {"from_member": 1},
        {"n": 3},
        {"version": 2},
        {"suite": 9},
        {"length": 6},
    ],
    ids=lambda c: next(iter(c)),
)
async def test_a_publish_with_a_wrong_header_is_a_bad_publish(relay, change):
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    await a.publish(group.sealed(0, 0, b"hello", **change))
    await a.expect_error(ErrorCode.BAD_PUBLISH)


async def test_a_publish_shorter_than_a_header_or_with_zero_length_is_a_bad_publish(relay):
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    await a.publish(b"\x01\x01" + bytes(10))
    await a.expect_error(ErrorCode.BAD_PUBLISH)
    b = await joined(relay.relay_port, group, 0)
    await b.publish(group.sealed(0, 0, b"")[:42] + bytes(16))
    await b.expect_error(ErrorCode.BAD_PUBLISH)


async def test_a_publish_one_byte_short_of_a_header_is_refused_with_good_ones_around_it(relay):
    # In one read: a good PUBLISH, one whose sealed message is a header less its last
    # byte (the hot path reads a header at once, and here the rest of it would come
    # from the next frame), then another good one. The relay refuses at the second
    # (its ERROR ends the connection before any ACCEPTED); the first is stored and
    # delivered, nothing from the second on is.
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    b = await joined(relay.relay_port, group, 1)
    short = group.sealed(0, 2, bytes(300))[:41]
    await a.send_raw(
        b"".join(
            struct.pack(">IB", len(s) + 1, FrameType.PUBLISH) + s
            for s in (group.sealed(0, 1), short, group.sealed(0, 3))
        )
    )
    await a.expect_error(ErrorCode.BAD_PUBLISH)
    assert (await b.deliver())[0] == 1
    await b.expect_nothing()


async def test_an_unknown_frame_type_after_welcome_is_malformed(relay):
    a = await joined(relay.relay_port, Group(2), 0)
    await a.send(0x7F, b"")
    await a.expect_error(ErrorCode.MALFORMED)


async def test_an_oversize_publish_is_refused(make_relay):
    relay = await make_relay(max_frame=1024)
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    await a.publish(group.sealed(0, 0, bytes(2000)))
    await a.expect_error(ErrorCode.TOO_LARGE)


async def test_a_frame_cut_short_by_a_close_stores_nothing(relay):
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    frame = struct.pack(">IB", 100, FrameType.PUBLISH) + group.sealed(0, 0)
    await a.send_raw(frame[:30])
    await a.close()
    b = await RawClient.connect(relay.relay_port)
    assert await b.join(group, 1) == 0


async def test_ping_is_answered_with_the_same_bytes_and_a_long_ping_is_malformed(relay):
    a = await joined(relay.relay_port, Group(2), 0)
    await a.send(FrameType.PING, b"abc")
    assert await a.expect(FrameType.PONG) == b"abc"
    await a.send(FrameType.PING, bytes(65))
    await a.expect_error(ErrorCode.MALFORMED)


class Clock:
    """The relay's clock (`RelayServer.now`), moved by hand: no token comes back and no
    connection idles unless the test says so, however slow the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_publishing_faster_than_the_rate_limit_is_refused(make_relay):
    relay = await make_relay(publish_rate=1.0, publish_burst=3)
    relay.now = Clock()  # stopped: the burst of 3 is all there is
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    for counter in range(3):
        await a.publish(group.sealed(0, counter))
    assert [(await a.accepted())[0] for _ in range(3)] == [1, 2, 3]
    await a.publish(group.sealed(0, 3))
    assert "rate" in await a.expect_error(ErrorCode.RATE_LIMITED)


async def test_an_idle_connection_is_closed_and_ping_keeps_it_alive(make_relay):
    relay = await make_relay(idle_timeout=0.4)  # the relay looks every 0.1 s of real time
    relay.now = clock = Clock()
    group = Group(2)
    idle = await joined(relay.relay_port, group, 0)
    alive = await joined(relay.relay_port, group, 1)
    for _ in range(3):  # 0.9 s of the relay's time pass, a PING every 0.3 s
        clock.now += 0.3
        await alive.send(FrameType.PING, b"")
        await alive.expect(FrameType.PONG)
    # idle has been silent for 0.9 s, alive for none: the relay's next look closes
    # idle, and alive, looked at in the same pass, is still served after it.
    assert "idle" in await idle.expect_error(ErrorCode.RELAY_FULL)
    await alive.expect_nothing()
    await alive.close()


async def publish_all(client: RawClient, group: Group, sender: int, counters: range) -> list[int]:
    for counter in counters:
        await client.publish(group.sealed(sender, counter, f"m{counter}".encode()))
    return [(await client.accepted())[0] for _ in counters]


async def test_a_publish_during_its_own_replay_is_answered_by_accepted_alone(make_relay):
    relay = await make_relay(publish_rate=1e6, publish_burst=10**6)
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    assert (await publish_all(a, group, 0, range(3000)))[-1] == 3000
    b = await RawClient.connect(relay.relay_port)
    assert await b.join(group, 1) == 3000  # replay pages follow, while b publishes
    await b.publish(group.sealed(1, 0))
    delivered, accepted = [], []
    while len(delivered) < 3000 or not accepted:
        frame = await b.recv()
        if frame.type == FrameType.ACCEPTED:
            accepted.append(int.from_bytes(frame.body[:8], "big"))
        else:
            assert frame.type == FrameType.DELIVER
            delivered.append(int.from_bytes(frame.body[:8], "big"))
    assert delivered == list(range(1, 3001)) and accepted == [3001]
    await b.expect_nothing()  # and never its own message as a DELIVER too


async def test_resume_from_zero_replays_everything_in_order_then_live(relay):
    group = Group(3)
    a = await joined(relay.relay_port, group, 0)
    assert await publish_all(a, group, 0, range(10)) == list(range(1, 11))
    b = await RawClient.connect(relay.relay_port)
    assert await b.join(group, 1, resume_after=0) == 10
    assert [(await b.deliver())[0] for _ in range(10)] == list(range(1, 11))
    await a.publish(group.sealed(0, 10))
    assert (await b.deliver())[0] == 11
    await b.expect_nothing()


async def test_resume_from_a_middle_seq_replays_only_what_follows(relay):
    group = Group(3)
    a = await joined(relay.relay_port, group, 0)
    await publish_all(a, group, 0, range(10))
    b = await joined(relay.relay_port, group, 2, resume_after=6)
    got = [await b.deliver() for _ in range(4)]
    assert [seq for seq, _ in got] == [7, 8, 9, 10]
    assert got[0][1] == group.sealed(0, 6, b"m6")
    await b.expect_nothing()


@pytest.mark.parametrize("resume_after", [2**63 - 1, 2**64 - 1])
async def test_a_resume_point_past_the_head_replays_nothing_and_then_delivers_live(
    relay, resume_after
):
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    await a.publish(group.sealed(0, 0, b"stored before"))
    await a.accepted()
    b = await joined(relay.relay_port, group, 1, resume_after=resume_after)
    live = group.sealed(0, 1, b"live")
    await a.publish(live)
    assert await a.accepted() == (2, 1)
    assert await b.deliver() == (2, live)
    for client in (a, b):
        await client.close()


async def test_a_member_resuming_gets_its_own_messages_back(relay):
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    await publish_all(a, group, 0, range(3))
    again = await joined(relay.relay_port, group, 0, resume_after=1)
    assert [(await again.deliver())[0] for _ in range(2)] == [2, 3]


async def test_resume_under_concurrent_publishing_has_no_gap_and_no_duplicate(relay):
    group = Group(3)
    pub = await joined(relay.relay_port, group, 0)
    await publish_all(pub, group, 0, range(300))
    total = 1500

    async def publisher() -> None:
        await publish_all(pub, group, 0, range(300, total))

    async def resumer(after: int) -> list[int]:
        client = await joined(relay.relay_port, group, 1, resume_after=after)
        seqs: list[int] = []
        while not seqs or seqs[-1] < total:
            seqs.append((await client.deliver())[0])
        await client.close()
        return seqs

    results = await asyncio.gather(
        publisher(), *(resumer(after) for after in (0, 100, 299, 300, 301))
    )
    for after, seqs in zip((0, 100, 299, 300, 301), results[1:], strict=True):
        assert seqs == list(range(after + 1, total + 1)), f"resume_after={after}"


async def test_retention_keeps_at_most_n_messages_per_room(make_relay):
    relay = await make_relay(retention=Retention(max_messages=5))
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    await publish_all(a, group, 0, range(12))
    b = await joined(relay.relay_port, group, 1)
    assert [(await b.deliver())[0] for _ in range(5)] == [8, 9, 10, 11, 12]
    await b.expect_nothing()


async def test_retention_keeps_at_most_b_bytes_per_room(make_relay):
    group = Group(2)
    size = len(group.sealed(0, 0, bytes(100)))
    relay = await make_relay(retention=Retention(max_bytes=3 * size + 10))
    a = await joined(relay.relay_port, group, 0)
    for counter in range(6):
        await a.publish(group.sealed(0, counter, bytes(100)))
        await a.accepted()
    b = await joined(relay.relay_port, group, 1)
    assert [(await b.deliver())[0] for _ in range(3)] == [4, 5, 6]
    await b.expect_nothing()


async def test_retention_drops_messages_older_than_the_age_limit(make_relay):
    relay = await make_relay(retention=Retention(max_age=30))
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    await publish_all(a, group, 0, range(3))
    assert await relay.backend.expire(time.time()) == 0  # younger than 30 s
    assert await relay.backend.expire(time.time() + 31) == 3  # as if 31 s had passed
    await publish_all(a, group, 0, range(3, 4))
    b = await RawClient.connect(relay.relay_port)
    assert await b.join(group, 1) == 4  # head survives retention
    assert (await b.deliver())[0] == 4
    await b.expect_nothing()


async def test_a_stalled_reader_does_not_stall_the_room(make_relay):
    relay = await make_relay(send_buffer=256 * 1024)
    group = Group(3)
    stalled = await joined(relay.relay_port, group, 2)
    stalled.writer.transport.pause_reading()  # never reads again
    pub = await joined(relay.relay_port, group, 0)
    reader = await joined(relay.relay_port, group, 1)
    body = bytes(32000)
    count = 600  # ~19 MB: far past the stalled socket's kernel buffers and the send limit

    async def read_all() -> int:
        n = 0
        while n < count:
            await reader.deliver(timeout=5)
            n += 1
        return n

    task = asyncio.ensure_future(read_all())
    window = 4  # a well-behaved publisher: at most 4 messages awaiting ACCEPTED
    for counter in range(count):
        await pub.publish(group.sealed(0, counter, body))
        if counter >= window:
            await pub.accepted()
    for _ in range(window):
        await pub.accepted()
    assert await asyncio.wait_for(task, 10) == count
    await until(lambda: len(relay.connections) == 2)  # the stalled one was dropped
    # and it resumes from its cursor later
    again = await joined(relay.relay_port, group, 2, resume_after=count - 2)
    assert [(await again.deliver())[0] for _ in range(2)] == [count - 1, count]


async def test_tls_on_both_ports(make_relay, tmp_path):
    cert_file, key_file, _ = self_signed_certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    relay = await make_relay(ssl_context=server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(cert_file))
    client_ctx.check_hostname = False
    group = Group(2)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", relay.relay_port, ssl=client_ctx, server_hostname="localhost"
    )
    a = RawClient(reader, writer)
    await a.join(group, 0)
    b = await joined(relay.relay_port, group, 1, tls=client_ctx)
    await a.publish(group.sealed(0, 0))
    assert await a.accepted() == (1, 0)
    assert (await b.deliver())[0] == 1
    p = await RawClient.connect(relay.presence_port, tls=client_ctx)
    from ghostline.protocol.frames import Port

    await p.join(group, 1, port=Port.PRESENCE)
    plain = await RawClient.connect(relay.relay_port)
    with pytest.raises(RelayError) as refused:  # told so, in plain
        await plain.join(group, 0)
    assert refused.value.reason == REASON_TLS_ONLY
