"""Rooms come and go (issue 9 item 7): registered only after a verified PROVE, limited per
address, removed once nobody holds them and nothing is stored; a room that once stored
messages keeps its roster and numbering while removed."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from relaytest_client import Group, RawClient, RelayError, joined

from ghostline.protocol.frames import ErrorCode, FrameType, Hello, Port, join_statement
from ghostline.relay import Publish, Retention, RoomLimitReached, SqliteBackend
from waiting import until, wait_until

ROSTER = (b"a" * 32, b"b" * 32)


def rooms_on_disk(path) -> tuple[int, int]:
    """(rooms, retired rooms) as the file holds them."""
    db = sqlite3.connect(path)
    try:
        rooms = db.execute("SELECT COUNT(*) FROM rooms").fetchone()[0]
        retired = db.execute("SELECT COUNT(*) FROM retired").fetchone()[0]
        return rooms, retired
    finally:
        db.close()


async def open_store(path, retention=None) -> SqliteBackend:
    store = SqliteBackend(path, retention)
    await store.open(None)  # type: ignore[arg-type]
    return store


async def test_a_room_released_with_nothing_stored_is_retired_and_frees_its_place(tmp_path):
    path = tmp_path / "s.sqlite"
    store = await open_store(path)
    await store.bind_roster(b"A" * 16, ROSTER, max_rooms=1)
    await store.bind_roster(b"A" * 16, ROSTER, max_rooms=1)  # a second connection
    with pytest.raises(RoomLimitReached):
        await store.bind_roster(b"B" * 16, ROSTER, max_rooms=1)
    store.release(b"A" * 16)
    store.release(b"A" * 16)  # the last one lets go
    await until(lambda: rooms_on_disk(path) == (0, 1), what="room A retired")
    await store.bind_roster(b"B" * 16, ROSTER, max_rooms=1)  # its place is free
    # and its roster is kept: nobody can claim its id with another one
    assert await store.roster(b"A" * 16) == ROSTER
    await store.close()


async def test_a_room_with_messages_stays_after_its_last_member_left(tmp_path):
    path = tmp_path / "s.sqlite"
    store = await open_store(path)
    await store.bind_roster(b"A" * 16, ROSTER, max_rooms=5)
    await store.append([Publish(b"A" * 16, 0, 0, b"x" * 10)])
    store.release(b"A" * 16)
    await store.close()
    store = await open_store(path)  # a restart removes empty rooms, not this one
    assert rooms_on_disk(path) == (1, 0)
    assert [m.seq for m in await store.read_after(b"A" * 16, 0)] == [1]
    await store.close()


async def test_a_room_emptied_by_retention_is_retired_and_comes_back_numbered_on(tmp_path):
    path = tmp_path / "s.sqlite"
    store = await open_store(path, Retention(max_age=60))
    room, other = b"A" * 16, (b"c" * 32, b"d" * 32)
    await store.bind_roster(room, ROSTER, max_rooms=1)
    await store.append([Publish(room, 0, c, b"x" * 10) for c in range(3)])
    store.release(room)
    assert await store.expire(time.time() + 61) == 3
    await until(lambda: rooms_on_disk(path) == (0, 1), what="room A retired")
    # retired: it does not count against max_rooms, and it keeps its roster
    await store.bind_roster(b"B" * 16, ROSTER, max_rooms=1)
    store.release(b"B" * 16)
    await until(lambda: rooms_on_disk(path) == (0, 2), what="room B retired")
    assert await store.roster(room) == ROSTER
    assert await store.bind_roster(room, other, max_rooms=1) == ROSTER  # the caller refuses
    # and its numbering goes on where it stopped: a member's cursor stays right
    assert await store.head(room) == 3
    got = await store.append([Publish(room, 1, 0, b"y" * 10)])
    assert [(a.seq, a.duplicate) for a in got] == [(4, False)]
    assert rooms_on_disk(path) == (1, 1)
    await store.close()


async def test_a_publish_in_flight_keeps_its_room_past_the_last_disconnect(make_relay):
    relay = await make_relay()
    gate = asyncio.Event()  # holds the first commit (another room's) in flight
    append = relay.backend.append

    async def gated(batch):
        await gate.wait()
        return await append(batch)

    relay.backend.append = gated  # type: ignore[method-assign]
    other = Group(2)
    b = await joined(relay.relay_port, other, 0)
    await b.publish(other.sealed(0, 0))
    await until(lambda: relay.hub._committing, what="the other room's commit in flight")
    group = Group(2)
    a = await joined(relay.relay_port, group, 0)
    for counter in range(50):  # queued behind that commit; then gone at once
        await a.publish(group.sealed(0, counter))
    await a.close()
    await until(lambda: len(relay.connections) == 1, what="the publisher gone")
    gate.set()
    assert await b.accepted() == (1, 0)
    c = await RawClient.connect(relay.relay_port)
    assert await c.join(group, 1) == 50, "every publish read before the close was stored"
    assert [(await c.deliver())[0] for _ in range(50)] == list(range(1, 51))
    await b.close()
    await c.close()


def flood_hellos(port: int, count: int) -> None:
    """`count` connections, each a HELLO for a random room and no PROVE, then closed."""

    async def one() -> None:
        client = await RawClient.connect(port)
        group = Group(2)
        await client.send(FrameType.HELLO, Hello(group.room, 0, group.roster, 0).encode())
        await client.expect(FrameType.CHALLENGE)  # the relay got as far as it goes
        await client.close()

    async def run() -> None:
        for start in range(0, count, 50):  # 50 at a time, bounded
            await asyncio.wait_for(
                asyncio.gather(*(one() for _ in range(min(50, count - start)))), 30
            )

    asyncio.run(run())


def test_a_flood_of_hellos_without_prove_registers_no_room(relay_process, tmp_path):
    store = tmp_path / "relay.sqlite"
    relay = relay_process(store, "--max-rooms", "20")
    flood_hellos(relay.relay_port, 300)  # 15 times the room limit
    assert rooms_on_disk(store) == (0, 0)  # not even retired: nothing was registered

    async def legit() -> int:
        client = await joined(relay.relay_port, Group(2), 0)
        await client.close()
        return len(client.store_id)

    assert asyncio.run(legit()) == 16  # a real group still gets in
    wait_until(lambda: rooms_on_disk(store) == (0, 1), what="its room retired when it left")


async def test_new_rooms_from_one_address_are_limited_to_a_burst(make_relay):
    relay = await make_relay(new_room_burst=3, new_room_rate=1 / 3600)
    groups = [Group(2) for _ in range(4)]
    members = [await joined(relay.relay_port, g, 0) for g in groups[:3]]
    late = await RawClient.connect(relay.relay_port)
    with pytest.raises(RelayError) as refused:
        await late.join(groups[3], 0)
    assert refused.value.code == ErrorCode.RELAY_FULL
    assert (
        refused.value.reason == "relay full: too many new rooms from your address; try again later"
    )
    assert await relay.backend.roster(groups[3].room) is None
    # rooms it already has are not new: their members keep joining
    again = [await joined(relay.relay_port, g, 1) for g in groups[:3]]
    for client in members + again:
        await client.close()


async def test_rooms_whose_members_left_with_nothing_stored_make_room_for_others(make_relay):
    relay = await make_relay(max_rooms=3, new_room_burst=100)
    for _ in range(4):  # 12 rooms through a table of 3
        clients = [await joined(relay.relay_port, Group(2), 0) for _ in range(3)]
        for client in clients:
            await client.close()
        await until(lambda: not relay.connections, what="all three gone")
        await until(lambda: rooms_on_disk(relay.backend.path)[0] == 0, what="rooms retired")


async def test_members_of_one_new_room_who_all_said_hello_first_cost_one_new_room(make_relay):
    relay = await make_relay(new_room_burst=1, new_room_rate=1 / 3600)
    group = Group(3)
    clients = [await RawClient.connect(relay.relay_port) for _ in range(3)]
    nonces = [await c.hello(group, i) for i, c in enumerate(clients)]  # room unknown to all
    for i, (client, nonce) in enumerate(zip(clients, nonces, strict=True)):
        statement = join_statement(Port.RELAY, group.room, i, nonce)
        await client.send(FrameType.PROVE, group.keys[i].sign(statement))
        await client.expect(FrameType.WELCOME)  # the room was new only for the first
    # and the one token of the burst is spent: another new room is refused
    late = await RawClient.connect(relay.relay_port)
    with pytest.raises(RelayError) as refused:
        await late.join(Group(2), 0)
    assert refused.value.code == ErrorCode.RELAY_FULL
    for client in [*clients, late]:
        await client.close()


async def test_members_of_one_new_room_who_prove_at_the_same_moment_cost_one_new_room(
    make_relay,
):
    relay = await make_relay(new_room_burst=1, new_room_rate=1 / 3600)
    group = Group(3)
    clients = [await RawClient.connect(relay.relay_port) for _ in range(3)]
    nonces = [await c.hello(group, i) for i, c in enumerate(clients)]
    proofs = [
        group.keys[i].sign(join_statement(Port.RELAY, group.room, i, nonce))
        for i, nonce in enumerate(nonces)
    ]
    await asyncio.gather(
        *(c.send(FrameType.PROVE, proof) for c, proof in zip(clients, proofs, strict=True))
    )
    for client in clients:
        await client.expect(FrameType.WELCOME)
    for client in clients:
        await client.close()
