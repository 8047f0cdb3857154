"""The asyncio Client against a real relay server on loopback (in-process, real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from ghostline.client import (
    Client,
    ConnectionChanged,
    Event,
    MessageAccepted,
    MessageReceived,
    MessageRejected,
    MessagesMissing,
    PadExhausted,
    PadLow,
    PresenceChanged,
)
from ghostline.client.session import Backoff
from ghostline.client.transport import RelayAddress
from ghostline.errors import PadExhaustedError, RelayRefused
from ghostline.frameproxy import FrameHook, FrameProxy, Tamperer
from ghostline.protocol.frames import Frame, FrameType, encode_deliver, encode_frame
from ghostline.protocol.payload import TextPayload
from ghostline.relay import RelayLimits, RelayServer, SqliteBackend
from ghostline.state.member import Member
from ghostline.state.store import Store
from ghostline.wording.hints import failure_hint
from helpers import free_port, make_kit_set, opened_members, unsent
from waiting import until

E = TypeVar("E")


@dataclass
class Relay:
    store: Path
    server: RelayServer | None = None
    port: int = 0
    presence_port: int = 0

    async def start(self) -> Relay:
        self.server = RelayServer(SqliteBackend(self.store), RelayLimits())
        self.port, self.presence_port = await self.server.start(
            "127.0.0.1", self.port, self.presence_port
        )
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    @property
    def address(self) -> RelayAddress:
        return RelayAddress("127.0.0.1", self.port, self.presence_port)


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    with opened_members(tmp_path / "kits", 3, seed="client") as opened:
        yield opened


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    r = await Relay(tmp_path / "relay.sqlite").start()
    yield r
    await r.stop()


def client_for(member: Member, *addrs: RelayAddress, **kw: object) -> Client:
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_cap", 0.3)
    return Client(member, list(addrs), **kw)  # type: ignore[arg-type]


async def expect(
    client: Client, kind: type[E], test: Callable[[E], bool] = lambda e: True, timeout: float = 5
) -> E:
    async with asyncio.timeout(timeout):
        while True:
            event: Event = await client.events.get()
            if isinstance(event, kind) and test(event):
                return event


async def texts(client: Client, count: int, timeout: float = 5) -> list[str]:
    got = []
    for _ in range(count):
        ev = await expect(client, MessageReceived, timeout=timeout)
        assert isinstance(ev.payload_obj, TextPayload)
        got.append(ev.payload_obj.text)
    return got


@contextlib.asynccontextmanager
async def through_proxy(
    relay: Relay, hook: FrameHook
) -> AsyncIterator[tuple[RelayAddress, FrameProxy]]:
    """A loopback proxy in front of the relay whose `hook` may rewrite frames; yields the
    address to give a client, and the proxy."""
    proxy = FrameProxy("127.0.0.1", relay.port, hook)
    port = await proxy.start()
    try:
        yield RelayAddress("127.0.0.1", port, relay.presence_port), proxy
    finally:
        await proxy.close()


async def send_accepted(client: Client, text: str) -> int:
    """Send `text` and wait until the relay has accepted it; returns its seq."""
    return await client.wait_accepted((await client.send_text(text)).counter, 5)


async def events_until(
    client: Client, done: Callable[[list[Event]], bool], timeout: float = 10
) -> list[Event]:
    """Every event, in order, until `done(events so far)` holds."""
    seen: list[Event] = []
    async with asyncio.timeout(timeout):
        while not done(seen):
            seen.append(await client.events.get())
    return seen


def shown(events: list[Event]) -> list[str]:
    """The texts of the messages received among `events`."""
    return [
        e.payload_obj.text
        for e in events
        if isinstance(e, MessageReceived) and isinstance(e.payload_obj, TextPayload)
    ]


# --- tests ---------------------------------------------------------------------


async def test_a_message_sent_is_accepted_and_received_by_the_others(
    members: list[Member], relay: Relay
) -> None:
    alice, bob, carol = (client_for(m, relay.address) for m in members)
    async with alice, bob, carol:
        await asyncio.gather(*(c.wait_connected(5) for c in (alice, bob, carol)))
        entry = await alice.send_text("hello")
        seq = await alice.wait_accepted(entry.counter, timeout=5)
        assert seq == 1
        accepted = await expect(alice, MessageAccepted)
        assert (accepted.counter, accepted.seq) == (entry.counter, 1)
        for c in (bob, carol):
            ev = await expect(c, MessageReceived)
            assert (ev.received.sender, ev.received.counter, ev.received.seq) == (0, 0, 1)
            assert ev.payload_obj == TextPayload("hello", ev.payload_obj.sent_at)  # type: ignore[union-attr]
        assert unsent(members[0]) == []
        assert members[1].relay_cursor == 1


async def test_messages_sealed_while_the_relay_is_down_go_out_when_it_comes_up(
    members: list[Member], tmp_path: Path
) -> None:
    relay = Relay(tmp_path / "relay.sqlite", port=free_port(), presence_port=free_port())
    alice = client_for(members[0], relay.address)
    async with alice:
        entries = [await alice.send_text(f"queued {i}") for i in range(3)]
        await expect(alice, ConnectionChanged, lambda e: e.retry_in is not None)
        assert [e.sealed for e in unsent(members[0])] == [e.sealed for e in entries]
        await relay.start()
        try:
            seqs = [await alice.wait_accepted(e.counter, timeout=5) for e in entries]
            assert seqs == [1, 2, 3]
            bob = client_for(members[1], relay.address)
            async with bob:
                assert await texts(bob, 3) == ["queued 0", "queued 1", "queued 2"]
        finally:
            await relay.stop()


async def test_a_member_resumes_after_its_cursor_and_sees_each_message_once(
    members: list[Member], relay: Relay
) -> None:
    alice = client_for(members[0], relay.address)
    async with alice:
        bob = client_for(members[1], relay.address)
        async with bob:
            await bob.wait_connected(5)
            await send_accepted(alice, "one")
            assert await texts(bob, 1) == ["one"]
        for text in ("two", "three"):
            await send_accepted(alice, text)
        bob = client_for(members[1], relay.address)
        async with bob:
            assert await texts(bob, 2) == ["two", "three"]
            await send_accepted(alice, "four")  # seq 4: anything resent would come first
            events = await events_until(bob, lambda seen: "four" in shown(seen))
            assert shown(events) == ["four"]
            assert not [e for e in events if isinstance(e, MessageRejected)]
        assert members[1].relay_cursor == 4


async def test_own_messages_echoed_on_resume_are_neither_shown_nor_rejected(
    members: list[Member], relay: Relay
) -> None:
    alice = client_for(members[0], relay.address, receive=False)
    async with alice:
        for text in ("a", "b"):
            await send_accepted(alice, text)
    assert members[0].relay_cursor == 0
    alice = client_for(members[0], relay.address)
    bob = client_for(members[1], relay.address, receive=False)
    async with alice, bob:
        await alice.wait_connected(5)
        await send_accepted(bob, "from bob")  # seq 3: the echoes of 1 and 2 come first
        events = await events_until(alice, lambda seen: "from bob" in shown(seen))
        assert shown(events) == ["from bob"]
        assert not [e for e in events if isinstance(e, MessageRejected)]
    assert members[0].relay_cursor == 3


async def test_it_fails_over_to_the_next_relay(members: list[Member], relay: Relay) -> None:
    dead = RelayAddress("127.0.0.1", free_port(), free_port())
    alice = client_for(members[0], dead, relay.address)
    async with alice:
        ev = await expect(alice, ConnectionChanged, lambda e: e.state == "connected")
        assert ev.relay == str(relay.address)
        await send_accepted(alice, "via the second relay")


async def test_it_reconnects_after_a_relay_restart_and_loses_nothing(
    members: list[Member], relay: Relay
) -> None:
    alice, bob = client_for(members[0], relay.address), client_for(members[1], relay.address)
    async with alice, bob:
        await asyncio.gather(alice.wait_connected(5), bob.wait_connected(5))
        await send_accepted(alice, "before")
        assert await texts(bob, 1) == ["before"]
        await relay.stop()
        await expect(bob, ConnectionChanged, lambda e: e.state == "reconnecting")
        during = await alice.send_text("during")
        await relay.start()
        assert await alice.wait_accepted(during.counter, 5) == 2
        assert await texts(bob, 1) == ["during"]


async def test_a_roster_mismatch_stops_the_client_with_a_hint(
    members: list[Member], relay: Relay, tmp_path: Path
) -> None:
    alice = client_for(members[0], relay.address)
    async with alice:
        await alice.wait_connected(5)
    # Another kit set (other signing keys) claiming the same room: the relay refuses it.
    other = make_kit_set(
        tmp_path / "other", 3, slice_len=4096, auth_keys=4, pad_id=members[0].header.pad_id
    )
    intruder_member = Member.open(other[0], state_path=tmp_path / "other.sqlite")
    try:
        intruder = client_for(intruder_member, relay.address)
        async with intruder:
            ev = await expect(intruder, ConnectionChanged, lambda e: e.state == "stopped")
            failure = intruder.failure
            assert isinstance(failure, RelayRefused)
            assert failure.code == 4
            assert "another member list" in (failure_hint(failure) or "")
            assert "code 4" in ev.detail
            with pytest.raises(RelayRefused):
                await intruder.wait_connected(1)
            entry = await intruder.send_text("never goes out")
            with pytest.raises(RelayRefused):
                await intruder.wait_accepted(entry.counter, 1)
    finally:
        intruder_member.close()


async def test_presence_reports_members_coming_and_going(
    members: list[Member], relay: Relay
) -> None:
    alice = client_for(members[0], relay.address)
    async with alice:
        await expect(alice, PresenceChanged, lambda e: e.online == {0})
        bob = client_for(members[1], relay.address, presence=False)
        async with bob:
            ev = await expect(alice, PresenceChanged, lambda e: 1 in e.online)
            assert ev.joined == {1}
        ev = await expect(alice, PresenceChanged, lambda e: 1 not in e.online)
        assert ev.left == {1}


async def test_presence_failure_does_not_stop_messaging(
    members: list[Member], relay: Relay
) -> None:
    alice = client_for(members[0], relay.address, presence_port=free_port())
    async with alice:
        ev = await expect(alice, ConnectionChanged, lambda e: e.channel == "presence")
        assert "presence unavailable" in ev.detail
        await send_accepted(alice, "still works")


async def test_a_seq_past_what_any_room_can_reach_is_refused_without_a_crash(
    members: list[Member], relay: Relay
) -> None:
    rewritten: list[str] = []

    def lie_about_the_head(direction: str, frame: Frame) -> bytes | None:
        if direction != "down":
            return None
        if frame.type == FrameType.WELCOME and "welcome" not in rewritten:
            rewritten.append("welcome")
            return encode_frame(FrameType.WELCOME, (2**64 - 1).to_bytes(8, "big") + frame.body[8:])
        if frame.type == FrameType.DELIVER and "deliver" not in rewritten:
            rewritten.append("deliver")
            return encode_frame(FrameType.DELIVER, (2**63).to_bytes(8, "big") + frame.body[8:])
        return None

    async with through_proxy(relay, lie_about_the_head) as (via, _):
        bob = client_for(members[1], via)
        alice = client_for(members[0], relay.address)
        async with alice, bob:
            await bob.wait_connected(5)
            await send_accepted(alice, "still here")
            assert await texts(bob, 1) == ["still here"]
        assert rewritten == ["welcome", "deliver"]
        assert members[1].relay_cursor == 1


async def test_a_genuine_message_with_a_forged_seq_far_ahead_cannot_move_the_cursor(
    members: list[Member], relay: Relay
) -> None:
    forged: list[int] = []

    def push_seq_ahead(direction: str, frame: Frame) -> bytes | None:
        if direction == "down" and frame.type == FrameType.DELIVER and not forged:
            forged.append(1)
            return encode_frame(FrameType.DELIVER, (2**40).to_bytes(8, "big") + frame.body[8:])
        return None

    async with through_proxy(relay, push_seq_ahead) as (via, _):
        bob = client_for(members[1], via)
        alice = client_for(members[0], relay.address)
        async with alice, bob:
            await bob.wait_connected(5)
            await send_accepted(alice, "where am I?")
            # bob drops the connection with the forged frame, resumes, and gets seq 1
            assert await texts(bob, 1) == ["where am I?"]
        assert forged == [1]
        assert members[1].relay_cursor == 1


async def test_replayed_stored_messages_leave_no_room_for_a_forged_seq_ahead(
    members: list[Member], relay: Relay
) -> None:
    # Bob resumes through 3 stored messages, then the first live one (seq 4) arrives
    # rewritten to seq 6. Accepted, it would move his cursor to 6, and the genuine 5
    # and 6 would be dropped as "already processed".
    forged: list[int] = []

    def push_live_seq_ahead(direction: str, frame: Frame) -> bytes | None:
        live_4 = frame.type == FrameType.DELIVER and int.from_bytes(frame.body[:8], "big") == 4
        if direction == "down" and live_4 and not forged:
            forged.append(4)
            return encode_frame(FrameType.DELIVER, (6).to_bytes(8, "big") + frame.body[8:])
        return None

    async with through_proxy(relay, push_live_seq_ahead) as (via, _):
        alice = client_for(members[0], relay.address)
        async with alice:
            for i in range(3):
                await send_accepted(alice, f"stored {i}")
            bob = client_for(members[1], via)
            async with bob:
                assert await texts(bob, 3) == ["stored 0", "stored 1", "stored 2"]
                for i in range(3):
                    await send_accepted(alice, f"live {i}")
                assert await texts(bob, 3) == ["live 0", "live 1", "live 2"]
        assert forged == [4]
        assert members[1].relay_cursor == 6


async def test_junk_frames_and_a_reordered_message_cannot_make_a_member_skip_the_held_ones(
    members: list[Member], relay: Relay
) -> None:
    # With TLS off, a hop holds back live seqs 1 and 2, injects two junk frames claiming
    # those seqs, passes seq 3, then the held two. Counting frames, seq 3 looked
    # plausible and the cursor jumped to 3: the genuine 1 and 2 were dropped as
    # "already processed". Now the junk is rejected, and every genuine one is shown.
    held: list[bytes] = []

    def hold_and_inject(direction: str, frame: Frame) -> bytes | None:
        if direction != "down" or frame.type != FrameType.DELIVER:
            return None
        seq = int.from_bytes(frame.body[:8], "big")
        if seq in (1, 2):
            held.append(encode_frame(frame.type, frame.body))
            return b""
        if seq == 3:
            junk = encode_deliver(1, b"junk") + encode_deliver(2, b"more junk")
            return junk + encode_frame(frame.type, frame.body) + b"".join(held)
        return None

    async with through_proxy(relay, hold_and_inject) as (via, _):
        bob = client_for(members[1], via)
        alice = client_for(members[0], relay.address)
        async with alice, bob:
            await bob.wait_connected(5)
            for text in ("one", "two", "three"):
                await send_accepted(alice, text)
            events = await events_until(bob, lambda seen: len(shown(seen)) == 3)
            assert shown(events) == ["three", "one", "two"]
            rejected = [(e.seq, e.rule) for e in events if isinstance(e, MessageRejected)]
            assert rejected == [(1, "too_short"), (2, "too_short")]
        assert len(held) == 2
        assert members[1].relay_cursor == 3


async def test_a_message_the_network_keeps_dropping_is_asked_for_again_then_reported(
    members: list[Member], relay: Relay
) -> None:
    dropped: list[int] = []

    def drop_seq_2(direction: str, frame: Frame) -> bytes | None:
        deliver = direction == "down" and frame.type == FrameType.DELIVER
        if deliver and int.from_bytes(frame.body[:8], "big") == 2:
            dropped.append(2)
            return b""
        return None

    async with through_proxy(relay, drop_seq_2) as (via, _):
        bob = client_for(members[1], via, gap_wait=0.2)
        alice = client_for(members[0], relay.address)
        async with alice, bob:
            await bob.wait_connected(5)
            for text in ("one", "two", "three"):
                await send_accepted(alice, text)
            events = await events_until(
                bob, lambda seen: bool(seen) and isinstance(seen[-1], MessagesMissing)
            )
            assert shown(events) == ["one", "three"]
            # Seq 3 came after a dropped frame: more than the relay can have assigned,
            # so bob asked again from his cursor; the hop dropped 2 again.
            missing = events[-1]
            assert isinstance(missing, MessagesMissing) and (missing.first, missing.last) == (2, 2)
            assert not any(isinstance(e, MessageRejected) for e in events)
            assert any(
                isinstance(e, ConnectionChanged)
                and e.state == "connected"
                and "after seq 1" in e.detail
                for e in events
            )
            await until(lambda: members[1].relay_cursor == 3, what="the cursor past the hole")
            await send_accepted(alice, "four")
            assert await texts(bob, 1) == ["four"]
        assert dropped == [2, 2]  # once live, once in the replay it asked for


async def test_a_tampered_delivery_is_rejected_and_the_genuine_one_fetched_again(
    members: list[Member], relay: Relay
) -> None:
    tamperer = Tamperer()
    tamperer.armed = 1
    async with through_proxy(relay, tamperer) as (via, _):
        bob = client_for(members[1], via, gap_wait=0.2)
        alice = client_for(members[0], relay.address)
        async with alice, bob:
            await bob.wait_connected(5)
            for text in ("tampered on the way", "intact"):
                await send_accepted(alice, text)
            rejected = await expect(bob, MessageRejected)
            assert (rejected.seq, rejected.rule) == (1, "bad_tag")
            assert await texts(bob, 1) == ["intact"]
            # The rejected frame settled nothing: seq 1 is a hole, asked for again.
            assert await texts(bob, 1) == ["tampered on the way"]
        assert members[1].relay_cursor == 2


async def test_a_dropped_connection_is_noticed_and_the_outbox_resent(
    members: list[Member], relay: Relay
) -> None:
    held: list[bytes] = []

    def hold_publish(direction: str, frame: object) -> bytes | None:
        if direction == "up" and getattr(frame, "type", None) == 0x03 and not held:
            held.append(frame.body)  # type: ignore[attr-defined]
            return b""
        return None

    async with through_proxy(relay, hold_publish) as (via, proxy):
        alice = client_for(members[0], via)
        async with alice:
            await alice.wait_connected(5)
            entry = await alice.send_text("held once")
            await until(lambda: held, what="the PUBLISH, held by the proxy")
            assert held == [entry.sealed]  # the relay never saw it
            assert entry.counter in await alice.pending_counters()
            proxy.drop_connections()
            assert await alice.wait_accepted(entry.counter, 5) == 1


async def test_pad_low_and_exhausted_are_reported(tmp_path: Path, relay: Relay) -> None:
    paths = make_kit_set(tmp_path / "small", 2, slice_len=4096, auth_keys=12, seed="small")
    member = Member.open(paths[0])
    try:
        client = client_for(member, relay.address, presence=False)
        async with client:
            for i in range(11):
                await client.send_text(f"m{i}")
            low = await expect(client, PadLow)
            assert 0 < low.fraction_left < 0.1
            await client.send_text("last")
            await expect(client, PadExhausted)
            with pytest.raises(PadExhaustedError):
                await client.send_text("one too many")
            await expect(client, PadExhausted)
            assert len(unsent(member)) <= 12
    finally:
        member.close()


def test_backoff_grows_with_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next_delay() <= 0.5


async def test_send_many_seals_a_group_in_one_commit_and_delivers_it_in_order(
    members: list[Member], relay: Relay
) -> None:
    alice, bob = (client_for(m, relay.address, presence=False) for m in members[:2])
    store = members[0].store
    commits = 0
    real_transaction = store.transaction

    def counting_transaction():  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1
        return real_transaction()

    store.transaction = counting_transaction  # type: ignore[method-assign]
    async with alice, bob:
        await asyncio.gather(alice.wait_connected(5), bob.wait_connected(5))
        payloads = [TextPayload(f"part {i}", 1).encode() for i in range(6)]
        commits = 0  # connecting commits too: the relay store the cursor belongs to
        entries = await alice.send_many(payloads)
        assert commits == 1
        assert [e.counter for e in entries] == list(range(6))
        # Durable when it returns: another connection to the state database sees them all.
        other = Store.open(store.path, store.binding, read_only=True)
        try:
            assert all(other.outbox_row(e.counter) is not None for e in entries)
        finally:
            other.close()
        seqs = [await alice.wait_accepted(e.counter, timeout=5) for e in entries]
        assert seqs == sorted(seqs)
        assert await texts(bob, 6) == [f"part {i}" for i in range(6)]
        assert await alice.send_many([]) == []


async def test_send_many_that_does_not_fit_seals_nothing(tmp_path: Path, relay: Relay) -> None:
    paths = make_kit_set(tmp_path / "small", 2, slice_len=4096, auth_keys=4, seed="many")
    member = Member.open(paths[0])
    try:
        client = client_for(member, relay.address, presence=False)
        async with client:
            with pytest.raises(PadExhaustedError):
                await client.send_many([b"\x01\x00\x00\x00\x01x"] * 5)
            await expect(client, PadExhausted)
            assert unsent(member) == [] and member.history() == []
            entries = await client.send_many([b"\x01\x00\x00\x00\x01x"] * 4)
            assert [e.counter for e in entries] == [0, 1, 2, 3]
    finally:
        member.close()


async def test_a_group_sealed_while_the_relay_is_down_goes_out_once_it_is_up(
    members: list[Member], tmp_path: Path
) -> None:
    relay = Relay(tmp_path / "relay.sqlite", port=free_port(), presence_port=free_port())
    alice = client_for(members[0], relay.address, presence=False)
    async with alice:
        entries = await alice.send_many([TextPayload(f"q{i}", 1).encode() for i in range(3)])
        await relay.start()
        try:
            seqs = [await alice.wait_accepted(e.counter, timeout=5) for e in entries]
            assert seqs == [1, 2, 3]
        finally:
            await relay.stop()
