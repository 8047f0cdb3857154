"""Relay store identity (docs/PROTOCOL.md section 8) with real relay processes: a relay
restarted on a new store, a store rebuilt under another id, and two independent relays
given as failover addresses. No member may skip a message in any of them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghostline.client import (
    AlreadyReceived,
    Client,
    MessageRejected,
    StoreChanged,
)
from ghostline.client.transport import RelayAddress
from ghostline.state.member import Member
from helpers import RelayProcess, opened_members
from test_client import events_until, expect, send_accepted, shown, texts


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    with opened_members(tmp_path / "kits", 2, seed="stores") as opened:
        yield opened


def address(relay: RelayProcess) -> RelayAddress:
    return RelayAddress("127.0.0.1", relay.relay_port, relay.presence_port)


def client_for(member: Member, *relays: RelayProcess) -> Client:
    return Client(
        member, [address(r) for r in relays], presence=False, backoff_base=0.05, backoff_cap=0.3
    )


def copy_under_a_new_id(source: Path, target: Path) -> None:
    """The relay store at `source` (its relay killed), copied whole to `target` with
    another store id: as if an operator rebuilt the store from a backup."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    src.backup(dst)
    src.close()
    dst.execute("UPDATE meta SET value = ? WHERE key = 'store_id'", (b"rebuilt store id",))
    dst.commit()
    dst.close()


async def test_after_the_relay_restarts_on_a_new_store_members_see_every_new_message(
    members: list[Member], tmp_path: Path
) -> None:
    relay = await asyncio.to_thread(RelayProcess, tmp_path / "first.sqlite")
    try:
        alice, bob = client_for(members[0], relay), client_for(members[1], relay)
        async with alice, bob:
            await asyncio.gather(alice.wait_connected(10), bob.wait_connected(10))
            for text in ("one", "two", "three"):
                await send_accepted(alice, text)
            assert await texts(bob, 3) == ["one", "two", "three"]
            assert members[1].relay_cursor == 3
            relay = await asyncio.to_thread(relay.restart, tmp_path / "second.sqlite")
            changed = await expect(bob, StoreChanged, timeout=15)
            assert (changed.relay, changed.old_cursor) == (str(address(relay)), 3)
            for text in ("four", "five"):  # seqs 1 and 2 of the new store
                await send_accepted(alice, text)
            events = await events_until(bob, lambda seen: len(shown(seen)) == 2)
            assert shown(events) == ["four", "five"]
            assert not any(isinstance(e, MessageRejected) for e in events)
        assert members[1].relay_cursor == 2
    finally:
        relay.kill()


async def test_a_store_rebuilt_under_a_new_id_is_replayed_and_old_messages_refused_quietly(
    members: list[Member], tmp_path: Path
) -> None:
    relay = await asyncio.to_thread(RelayProcess, tmp_path / "first.sqlite")
    try:
        alice, bob = client_for(members[0], relay), client_for(members[1], relay)
        async with alice, bob:
            await asyncio.gather(alice.wait_connected(10), bob.wait_connected(10))
            for text in ("one", "two", "three"):
                await send_accepted(alice, text)
            assert await texts(bob, 3) == ["one", "two", "three"]
            relay.kill()
            copy_under_a_new_id(tmp_path / "first.sqlite", tmp_path / "rebuilt.sqlite")
            relay = await asyncio.to_thread(relay.restart, tmp_path / "rebuilt.sqlite")
            await expect(bob, StoreChanged, timeout=15)
            await send_accepted(alice, "four")
            events = await events_until(bob, lambda seen: len(shown(seen)) == 1)
            assert shown(events) == ["four"]
            assert [e.seq for e in events if isinstance(e, AlreadyReceived)] == [1, 2, 3]
            assert not any(isinstance(e, MessageRejected) for e in events)
        assert members[1].relay_cursor == 4
    finally:
        relay.kill()


async def test_two_independent_relays_as_failover_addresses_skip_no_message_on_either(
    members: list[Member], tmp_path: Path
) -> None:
    a = await asyncio.to_thread(RelayProcess, tmp_path / "a.sqlite")
    b = await asyncio.to_thread(RelayProcess, tmp_path / "b.sqlite")
    try:
        bob = client_for(members[1], a, b)  # starts on A, fails over to B
        async with bob:
            async with client_for(members[0], a) as alice_on_a:
                await bob.wait_connected(10)
                for text in ("a1", "a2", "a3"):
                    await send_accepted(alice_on_a, text)
                assert await texts(bob, 3) == ["a1", "a2", "a3"]
            async with client_for(members[0], b) as alice_on_b:
                for text in ("b1", "b2"):  # seqs 1 and 2 of B, below bob's cursor on A
                    await send_accepted(alice_on_b, text)
                a.kill()
                events = await events_until(bob, lambda seen: len(shown(seen)) == 2, timeout=15)
                assert shown(events) == ["b1", "b2"]
                assert any(isinstance(e, StoreChanged) for e in events)
                await send_accepted(alice_on_b, "b3")
                assert await texts(bob, 1) == ["b3"]
            a = await asyncio.to_thread(a.restart)
            async with client_for(members[0], a) as alice_on_a:
                await send_accepted(alice_on_a, "a4")  # seq 4 of A
            b.kill()  # bob goes back to A, where his cursor was 3 and B's was 3 too
            events = await events_until(bob, lambda seen: len(shown(seen)) == 1, timeout=15)
            assert shown(events) == ["a4"]
            assert [e.seq for e in events if isinstance(e, AlreadyReceived)] == [1, 2, 3]
            assert not any(isinstance(e, MessageRejected) for e in events)
    finally:
        a.kill()
        b.kill()


def back_up(source: Path, target: Path) -> None:
    """A copy of the relay store at `source` (its relay killed) at `target`, store id
    and all: the backup an operator would restore."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    src.backup(dst)
    src.close()
    dst.close()


async def test_a_store_restored_from_a_backup_under_its_id_is_read_again_while_offline(
    members: list[Member], tmp_path: Path
) -> None:
    # The reviewer's scenario. Bob reads up to seq 3; the relay's store is restored
    # from a backup holding only seq 1, under the same store id; alice sends three more
    # (seqs 2-4 of the restored store) while bob is away. Resuming after seq 3 he would
    # see only "six": his anchor (seq 3, "three") is checked, another frame is there,
    # and he reads the store again from seq 0.
    store = tmp_path / "relay.sqlite"
    relay = await asyncio.to_thread(RelayProcess, store)
    try:
        alice = client_for(members[0], relay)
        async with alice:
            async with client_for(members[1], relay) as bob:
                await send_accepted(alice, "one")
                assert await texts(bob, 1) == ["one"]
                relay.kill()
                back_up(store, tmp_path / "backup.sqlite")
                relay = await asyncio.to_thread(relay.restart)
                for text in ("two", "three"):
                    await send_accepted(alice, text)
                assert await texts(bob, 2) == ["two", "three"]
            assert members[1].relay_cursor == 3
            relay.kill()
            relay = await asyncio.to_thread(relay.restart, tmp_path / "backup.sqlite")
            for text in ("four", "five", "six"):
                await send_accepted(alice, text)
        async with client_for(members[1], relay) as bob:
            events = await events_until(bob, lambda seen: len(shown(seen)) == 3, timeout=15)
            assert shown(events) == ["four", "five", "six"]
            changed = [e for e in events if isinstance(e, StoreChanged)]
            assert [(e.went_back, e.old_cursor) for e in changed] == [(True, 3)]
            assert [e.seq for e in events if isinstance(e, AlreadyReceived)] == [1]
            assert not any(isinstance(e, MessageRejected) for e in events)
        assert members[1].relay_cursor == 4
    finally:
        relay.kill()


async def test_a_store_restored_with_a_head_below_the_cursor_is_read_again_from_its_start(
    members: list[Member], tmp_path: Path
) -> None:
    # Bob stays connected: when the restored relay comes up, its head (1) is below his
    # cursor (3), whatever alice sends after.
    store = tmp_path / "relay.sqlite"
    relay = await asyncio.to_thread(RelayProcess, store)
    try:
        alice, bob = client_for(members[0], relay), client_for(members[1], relay)
        async with alice, bob:
            await asyncio.gather(alice.wait_connected(10), bob.wait_connected(10))
            await send_accepted(alice, "one")
            relay.kill()
            back_up(store, tmp_path / "backup.sqlite")
            relay = await asyncio.to_thread(relay.restart)
            for text in ("two", "three"):
                await send_accepted(alice, text)
            assert await texts(bob, 3) == ["one", "two", "three"]
            relay = await asyncio.to_thread(relay.restart, tmp_path / "backup.sqlite")
            changed = await expect(bob, StoreChanged, timeout=15)
            assert (changed.went_back, changed.old_cursor) == (True, 3)
            for text in ("four", "five"):
                await send_accepted(alice, text)
            events = await events_until(bob, lambda seen: len(shown(seen)) == 2, timeout=15)
            assert shown(events) == ["four", "five"]
            assert not any(isinstance(e, MessageRejected) for e in events)
        assert members[1].relay_cursor == 3
    finally:
        relay.kill()
