"""What one read of the relay may hold once a member joined: several frames, a frame's
start whose rest comes later, a short frame after PUBLISHes, a bad length prefix after
good frames. The relay's hot path takes a read of whole good PUBLISHes in one walk and
leaves everything else to the frame splitter; each case here ends the same either way."""

from __future__ import annotations

import struct

import pytest
from relaytest_client import Group, RawClient, joined

from ghostline.protocol.frames import ErrorCode, FrameType


def publish_frames(group: Group, sender: int, counters: range) -> bytes:
    return b"".join(
        struct.pack(">IB", len(s) + 1, FrameType.PUBLISH) + s
        for s in (group.sealed(sender, c) for c in counters)
    )


async def test_publishes_then_a_short_ping_in_one_read_are_all_answered(relay):
    # The PING frame (6 bytes) is too short to be a PUBLISH: it must still be answered
    # now, not kept as if it were the start of a frame still on its way.
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    b = await joined(relay.relay_port, group, 1)
    await a.send_raw(
        publish_frames(group, 0, range(2)) + struct.pack(">IB", 2, FrameType.PING) + b"x"
    )
    got = sorted([(f.type, f.body) for f in [await a.recv() for _ in range(3)]])
    assert got[0][0] == FrameType.ACCEPTED and got[1][0] == FrameType.ACCEPTED
    assert got[2] == (FrameType.PONG, b"x")
    assert [(await b.deliver())[0] for _ in range(2)] == [1, 2]


@pytest.mark.parametrize("cut", [3, 20, -1], ids=["in-prefix", "in-header", "in-body"])
async def test_a_publish_cut_across_two_reads_is_stored_once_when_its_rest_comes(relay, cut):
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    b = await joined(relay.relay_port, group, 1)
    first, second = publish_frames(group, 0, range(1)), publish_frames(group, 0, range(1, 2))
    await a.send_raw(first + second[:cut])
    assert await a.accepted() == (1, 0)  # the whole frame went on; the rest waits
    await a.send_raw(second[cut:])
    assert await a.accepted() == (2, 1)
    assert [(await b.deliver())[0] for _ in range(2)] == [1, 2]
    await a.expect_nothing()
    await b.expect_nothing()


@pytest.mark.parametrize(
    ("tail", "code"),
    [
        (struct.pack(">I", 0), ErrorCode.MALFORMED),  # an empty frame, alone at the end
        (struct.pack(">I", 0) + bytes(80), ErrorCode.MALFORMED),
        (struct.pack(">IB", 1 << 24, FrameType.PUBLISH), ErrorCode.TOO_LARGE),
        (struct.pack(">IB", 1 << 24, FrameType.PUBLISH) + bytes(80), ErrorCode.TOO_LARGE),
    ],
    ids=["empty-short", "empty-long", "oversize-short", "oversize-long"],
)
async def test_a_bad_length_prefix_after_good_publishes_in_one_read_stores_none_of_them(
    relay, tail, code
):
    # A bad prefix anywhere in a read is refused before any frame of it is handled.
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    b = await joined(relay.relay_port, group, 1)
    await a.send_raw(publish_frames(group, 0, range(3)) + tail)
    await a.expect_error(code)
    await b.expect_nothing()
    c = await RawClient.connect(relay.relay_port)
    assert await c.join(group, 1) == 0
    for client in (b, c):
        await client.close()
