"""Handshake on both ports (docs/PROTOCOL.md section 8): success and every failure code."""

from __future__ import annotations

import asyncio
import struct

import pytest
from relaytest_client import Group, RawClient, RelayError, joined

from ghostline.protocol.frames import (
    REASON_PRESENCE_PORT,
    REASON_RELAY_PORT,
    ErrorCode,
    FrameType,
    Hello,
    Port,
    encode_frame,
    join_statement,
)
from waiting import until


async def test_a_member_of_a_new_room_is_welcomed_with_head_zero(relay):
    group = Group(3)
    client = await RawClient.connect(relay.relay_port)
    assert await client.join(group, 1) == 0
    await client.close()


async def test_the_presence_port_welcomes_with_its_own_port_byte(relay):
    group = Group(2)
    client = await RawClient.connect(relay.presence_port)
    assert await client.join(group, 0, port=Port.PRESENCE) == 0
    await client.close()


async def test_a_first_frame_that_is_not_hello_is_a_bad_handshake(relay):
    client = await RawClient.connect(relay.relay_port)
    await client.send(FrameType.PUBLISH, b"x" * 50)
    await client.expect_error(ErrorCode.BAD_HANDSHAKE)


async def test_a_hello_whose_length_does_not_match_n_is_a_bad_handshake(relay):
    group = Group(3)
    body = Hello(group.room, 0, group.roster, 0).encode()
    client = await RawClient.connect(relay.relay_port)
    await client.send(FrameType.HELLO, body[:-1])
    await client.expect_error(ErrorCode.BAD_HANDSHAKE)


async def test_a_hello_naming_a_member_outside_the_roster_is_a_bad_handshake(relay):
    group = Group(2)
    body = bytearray(Hello(group.room, 0, group.roster, 0).encode())
    struct.pack_into(">H", body, 16, 2)
    client = await RawClient.connect(relay.relay_port)
    await client.send(FrameType.HELLO, bytes(body))
    await client.expect_error(ErrorCode.BAD_HANDSHAKE)


async def test_a_second_frame_that_is_not_prove_is_a_bad_handshake(relay):
    group = Group(2)
    client = await RawClient.connect(relay.relay_port)
    await client.hello(group, 0)
    await client.send(FrameType.PING, b"")
    await client.expect_error(ErrorCode.BAD_HANDSHAKE)


async def test_a_later_hello_with_another_roster_is_a_roster_mismatch(relay):
    group = Group(3)
    first = await joined(relay.relay_port, group, 0)
    impostor = Group(3, room=group.room)  # same room, different keys
    client = await RawClient.connect(relay.relay_port)
    await client.send(FrameType.HELLO, Hello(group.room, 0, impostor.roster, 0).encode())
    await client.expect_error(ErrorCode.ROSTER_MISMATCH)
    # also on the presence port, and with a different n
    bigger = Group(4, room=group.room)
    client = await RawClient.connect(relay.presence_port)
    await client.send(FrameType.HELLO, Hello(group.room, 0, bigger.roster, 0).encode())
    await client.expect_error(ErrorCode.ROSTER_MISMATCH)
    await first.close()


async def test_a_signature_by_another_key_is_a_bad_signature(relay):
    group = Group(3)
    client = await RawClient.connect(relay.relay_port)
    nonce = await client.hello(group, 1)
    statement = join_statement(Port.RELAY, group.room, 1, nonce)
    await client.send(FrameType.PROVE, group.keys[2].sign(statement))
    await client.expect_error(ErrorCode.BAD_SIGNATURE)


async def test_a_presence_prove_on_the_relay_port_is_told_which_port_it_reached(relay):
    group = Group(2)
    client = await RawClient.connect(relay.relay_port)
    nonce = await client.hello(group, 0)
    statement = join_statement(Port.PRESENCE, group.room, 0, nonce)
    await client.send(FrameType.PROVE, group.keys[0].sign(statement))
    reason = await client.expect_error(ErrorCode.BAD_HANDSHAKE)
    assert reason == REASON_RELAY_PORT == "this is the relay port: connect to the presence port"


async def test_a_relay_prove_on_the_presence_port_is_told_which_port_it_reached(relay):
    group = Group(2)
    client = await RawClient.connect(relay.presence_port)
    nonce = await client.hello(group, 0)
    statement = join_statement(Port.RELAY, group.room, 0, nonce)
    await client.send(FrameType.PROVE, group.keys[0].sign(statement))
    reason = await client.expect_error(ErrorCode.BAD_HANDSHAKE)
    assert reason == REASON_PRESENCE_PORT == "this is the presence port: connect to the relay port"
    # and neither registered the room
    assert await relay.backend.roster(group.room) is None


async def test_a_signature_by_another_key_on_the_presence_port_is_still_a_bad_signature(relay):
    group = Group(3)
    client = await RawClient.connect(relay.presence_port)
    nonce = await client.hello(group, 0)
    statement = join_statement(Port.RELAY, group.room, 0, nonce)
    await client.send(FrameType.PROVE, group.keys[1].sign(statement))
    assert await client.expect_error(ErrorCode.BAD_SIGNATURE) == "signature does not verify"


async def test_a_signature_over_an_old_nonce_is_a_bad_signature(relay):
    group = Group(2)
    client = await RawClient.connect(relay.relay_port)
    await client.hello(group, 0)
    statement = join_statement(Port.RELAY, group.room, 0, bytes(32))
    await client.send(FrameType.PROVE, group.keys[0].sign(statement))
    await client.expect_error(ErrorCode.BAD_SIGNATURE)


async def test_a_prove_of_the_wrong_length_is_a_bad_handshake(relay):
    group = Group(2)
    client = await RawClient.connect(relay.relay_port)
    await client.hello(group, 0)
    await client.send(FrameType.PROVE, bytes(63))
    await client.expect_error(ErrorCode.BAD_HANDSHAKE)


async def test_a_handshake_that_does_not_finish_in_time_is_dropped(make_relay):
    relay = await make_relay(handshake_timeout=0.3)
    client = await RawClient.connect(relay.relay_port)
    await client.hello(Group(2), 0)
    reason = await client.expect_error(ErrorCode.BAD_HANDSHAKE, timeout=3)
    assert "time" in reason
    silent = await RawClient.connect(relay.presence_port)
    await silent.expect_error(ErrorCode.BAD_HANDSHAKE, timeout=3)


async def test_an_oversize_frame_is_refused_before_its_body_arrives(relay):
    client = await RawClient.connect(relay.relay_port)
    await client.send_raw(struct.pack(">I", relay.limits.max_frame + 1) + b"\x01")
    await client.expect_error(ErrorCode.TOO_LARGE)


async def test_a_zero_length_frame_is_malformed(relay):
    client = await RawClient.connect(relay.relay_port)
    await client.send_raw(b"\x00\x00\x00\x00")
    await client.expect_error(ErrorCode.MALFORMED)


async def test_a_truncated_frame_followed_by_close_leaves_no_connection_behind(relay):
    client = await RawClient.connect(relay.relay_port)
    await client.send_raw(encode_frame(FrameType.HELLO, bytes(100))[:50])
    await client.close()
    await until(lambda: not relay.connections)


async def test_too_many_connections_is_relay_full(make_relay):
    relay = await make_relay(max_connections=2)
    a = await RawClient.connect(relay.relay_port)
    b = await RawClient.connect(relay.presence_port)
    await until(lambda: len(relay.connections) == 2)
    c = await RawClient.connect(relay.relay_port)
    assert "connections" in await c.expect_error(ErrorCode.RELAY_FULL)
    await a.close()
    await b.close()


async def test_too_many_connections_from_one_address_is_relay_full(make_relay):
    relay = await make_relay(max_connections_per_address=1)
    a = await RawClient.connect(relay.relay_port)
    await until(lambda: len(relay.connections) == 1)
    b = await RawClient.connect(relay.relay_port)
    assert "address" in await b.expect_error(ErrorCode.RELAY_FULL)
    await a.close()


async def test_a_new_room_past_the_room_limit_is_relay_full(make_relay):
    relay = await make_relay(max_rooms=1)
    a = await joined(relay.relay_port, Group(2), 0)
    client = await RawClient.connect(relay.relay_port)
    with pytest.raises(RelayError) as refused:
        await client.join(Group(2), 0)
    assert refused.value.code == ErrorCode.RELAY_FULL and "rooms" in refused.value.reason
    await a.close()


async def test_many_handshakes_at_once_all_succeed(relay):
    group = Group(5)
    clients = await asyncio.gather(*(joined(relay.relay_port, group, i % 5) for i in range(20)))
    assert [c.store_id for c in clients] == [relay.backend.store_id] * 20  # each was welcomed
    assert len(relay.connections) == 20
    for client in clients:
        await client.expect_nothing()  # and is still served
        await client.close()
