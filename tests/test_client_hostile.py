"""What a hostile relay can do to a Client: a fake relay over real loopback sockets sends
frames no honest relay would, and the client must neither die silently nor write
anything out of range."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from fake_relay import FakeRelay, FakeSession
from ghostline.client import (
    Client,
    ClientState,
    ConnectionChanged,
    Event,
    MessageReceived,
    MessageRejected,
    PresenceChanged,
    RelayFailing,
    StoreChanged,
)
from ghostline.client.client import FATAL_AFTER
from ghostline.errors import InternalError, RelayRefused, StateError
from ghostline.protocol.envelope import pack_header
from ghostline.protocol.frames import (
    REASON_HANDSHAKE_TIMEOUT,
    ErrorCode,
    FrameType,
    Port,
    encode_accepted,
    encode_deliver,
    encode_error,
    encode_frame,
    encode_member,
    encode_presence,
)
from ghostline.protocol.relaycursor import RelayCursor
from ghostline.state.member import Member
from helpers import derived, opened_members, unsent
from waiting import until

E = TypeVar("E")
HUGE = (1 << 63, (1 << 64) - 1)


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    with opened_members(tmp_path / "kits", 3, seed="hostile") as opened:
        yield opened


@contextlib.asynccontextmanager
async def fake_relay(relay: FakeRelay) -> AsyncIterator[FakeRelay]:
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()
    assert relay.errors == []


def client_for(member: Member, relay: FakeRelay, **kw: object) -> Client:
    kw.setdefault("backoff_base", 0.02)
    kw.setdefault("backoff_cap", 0.1)
    kw.setdefault("ping_interval", 0.2)
    return Client(member, [relay.address], **kw)  # type: ignore[arg-type]


async def expect(client: Client, kind: type[E], test: Callable[[E], bool] = lambda e: True) -> E:
    async with asyncio.timeout(10):
        while True:
            event: Event = await client.events.get()
            if isinstance(event, kind) and test(event):
                return event


def forged_from(member: Member, sender: int, counter: int, offset: int = 0) -> bytes:
    """A sealed message's shape naming `sender` and `counter`, with junk for the rest."""
    h = member.header
    return pack_header(h.pad_id, sender, h.n, counter, offset, 8) + b"x" * 8 + bytes(16 * (h.n - 1))


def text_payload(text: str) -> bytes:
    return b"\x01\x00\x00\x00\x00" + text.encode()


def once_then_behave(*frames: bytes) -> Callable[[FakeSession], object]:
    """A play that sends `frames` on the first connection, then behaves."""

    async def play(session: FakeSession) -> None:
        if session.index == 0:
            session.send(*frames)
        await session.serve()

    return play


async def test_a_forged_deliver_naming_us_with_a_huge_counter_is_refused_and_later_ones_arrive(
    members: list[Member],
) -> None:
    bob = members[1]
    genuine = members[0].seal(b"\x01\x00\x00\x00\x00still here")
    frames = [encode_deliver(1, forged_from(bob, bob.index, c)) for c in HUGE]
    relay = FakeRelay(once_then_behave(*frames, encode_deliver(3, genuine.sealed)))
    async with fake_relay(relay):
        client = client_for(bob, relay, presence=False)
        async with client:
            for _ in HUGE:
                rejected = await expect(client, MessageRejected)
                assert rejected.rule == "own_message"
            got = await expect(client, MessageReceived)
            assert got.received.payload.endswith(b"still here")
            assert client.state is ClientState.CONNECTED and client.failure is None
    assert bob.relay_state() == RelayCursor(relay.store_id, 0, frozenset({3}))  # 1: rejected
    assert unsent(bob) == []


@pytest.mark.parametrize("counter", [64, *HUGE])
async def test_a_forged_accepted_with_a_huge_counter_reconnects_instead_of_dying(
    members: list[Member], counter: int
) -> None:
    alice = members[0]
    relay = FakeRelay(once_then_behave(encode_accepted(1, counter)))
    async with fake_relay(relay):
        client = client_for(alice, relay, presence=False)
        async with client:
            entry = await client.send_text("kept in the outbox")
            event = await expect(client, ConnectionChanged, lambda e: e.retry_in is not None)
            assert "cannot have sent" in event.detail
            await until(lambda: relay.connections() >= 2, what="a reconnect")
            assert client.failure is None
    assert [e.counter for e in unsent(alice)] == [entry.counter]


async def test_an_accepted_with_a_seq_no_room_has_reconnects(members: list[Member]) -> None:
    alice = members[0]
    entry = alice.seal(b"\x01\x00\x00\x00\x00mine")
    relay = FakeRelay(once_then_behave(encode_accepted(1 << 63, entry.counter)))
    async with fake_relay(relay):
        client = client_for(alice, relay, presence=False)
        async with client:
            event = await expect(client, ConnectionChanged, lambda e: e.retry_in is not None)
            assert "which no room has" in event.detail
            await until(lambda: relay.connections() >= 2, what="a reconnect")
    assert [e.counter for e in unsent(alice)] == [entry.counter]


async def test_an_unexpected_error_while_receiving_reconnects_and_says_why(
    members: list[Member], monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = members[1]
    sealed = members[0].seal(b"\x01\x00\x00\x00\x00hello").sealed
    real_receive = bob.receive
    calls = []

    def broken_once(seq: int, data: bytes, **kw: object) -> object:
        calls.append(seq)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real_receive(seq, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(bob, "receive", broken_once)

    async def deliver(session: FakeSession) -> None:
        if session.hello.resume_after == 0:
            session.send(encode_deliver(1, sealed))
        await session.serve()

    relay = FakeRelay(deliver)
    async with fake_relay(relay):
        client = client_for(bob, relay, presence=False)
        async with client:
            event = await expect(client, ConnectionChanged, lambda e: e.retry_in is not None)
            assert "unexpected error: RuntimeError: a bug" in event.detail
            assert isinstance(client.last_error, InternalError)
            got = await expect(client, MessageReceived)
            assert got.received.seq == 1
    assert bob.relay_cursor == 1


async def test_a_broken_state_database_stops_the_client_with_the_error(
    members: list[Member], monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = members[1]
    sealed = members[0].seal(b"\x01\x00\x00\x00\x00hello").sealed

    def broken(*args: object, **kw: object) -> object:
        raise StateError("the state database is locked or unwritable (disk I/O error)")

    monkeypatch.setattr(bob, "receive", broken)
    relay = FakeRelay(once_then_behave(encode_deliver(1, sealed)))
    async with fake_relay(relay):
        client = client_for(bob, relay, presence=False)
        async with client:
            event = await expect(client, ConnectionChanged, lambda e: e.state == "stopped")
            assert "disk I/O error" in event.detail
            assert isinstance(client.failure, StateError)


async def test_presence_naming_a_member_outside_the_group_is_refused_and_retried(
    members: list[Member],
) -> None:
    async def lie(session: FakeSession) -> None:
        if session.index == 0:
            session.send(encode_presence([0, 7]))
        else:
            session.send(encode_presence([0, 2]))
        await session.serve()

    relay = FakeRelay(presence_play=lie)
    async with fake_relay(relay):
        client = client_for(members[0], relay)
        async with client:
            down = await expect(
                client, ConnectionChanged, lambda e: e.channel == "presence" and bool(e.retry_in)
            )
            assert "member 7 in a group of 3" in down.detail
            event = await expect(client, PresenceChanged, lambda e: e.online == {0, 2})
            assert 7 not in event.online


async def test_an_internal_error_on_every_join_is_reported_after_a_few_and_retried(
    members: list[Member],
) -> None:
    relay = FakeRelay(
        before_welcome=lambda i, hello: encode_error(ErrorCode.INTERNAL, "database is locked")
    )
    async with fake_relay(relay):
        client = client_for(members[0], relay, presence=False)
        async with client:
            await client.send_text("waits in the outbox")
            failing = await expect(client, RelayFailing)
            assert (failing.code, failing.reason, failing.times) == (9, "database is locked", 3)
            before = relay.connections()
            await until(lambda: relay.connections() > before + 2, what="more retries")
            assert client.failure is None
            assert len(unsent(members[0])) == 1


async def test_one_forged_error_frame_costs_a_reconnect_not_the_session(
    members: list[Member],
) -> None:
    # mitm3.py: without TLS a hop injects one ERROR 5 (bad signature) into a joined
    # connection. It used to stop the client for good.
    relay = FakeRelay(
        once_then_behave(encode_error(ErrorCode.BAD_SIGNATURE, "signature does not verify"))
    )
    async with fake_relay(relay):
        client = client_for(members[0], relay, presence=False)
        async with client:
            down = await expect(client, ConnectionChanged, lambda e: e.retry_in is not None)
            assert "signature does not verify" in down.detail
            await expect(client, ConnectionChanged, lambda e: e.state == "connected")
            assert relay.connections() == 2
            assert client.state is ClientState.CONNECTED and client.failure is None


@pytest.mark.parametrize(
    "code", [ErrorCode.ROSTER_MISMATCH, ErrorCode.BAD_SIGNATURE, ErrorCode.BAD_HANDSHAKE]
)
async def test_the_same_refusal_on_three_fresh_connections_in_a_row_stops_the_client(
    members: list[Member], code: ErrorCode
) -> None:
    relay = FakeRelay(before_welcome=lambda i, hello: encode_error(code, "refused"))
    async with fake_relay(relay):
        client = client_for(members[0], relay, presence=False)
        async with client:
            await expect(client, ConnectionChanged, lambda e: e.state == "stopped")
            assert client.state is ClientState.FAILED
            assert isinstance(client.failure, RelayRefused) and client.failure.code == code
            assert relay.connections() == FATAL_AFTER == 3


async def test_the_relays_handshake_timeout_is_retried_and_never_stops_the_client(
    members: list[Member],
) -> None:
    # A slow path (a congested Tor circuit) makes the relay give up on the handshake:
    # ERROR 3, like a bad handshake, but no mistake of the client's.
    relay = FakeRelay(
        before_welcome=lambda i, h: encode_error(ErrorCode.BAD_HANDSHAKE, REASON_HANDSHAKE_TIMEOUT)
    )
    async with fake_relay(relay):
        client = client_for(members[0], relay, presence=False)
        async with client:
            failing = await expect(client, RelayFailing)
            assert (failing.code, failing.reason) == (3, REASON_HANDSHAKE_TIMEOUT)
            await until(lambda: relay.connections() > FATAL_AFTER + 1, what="more retries")
            assert client.failure is None and client.running


async def test_the_backoff_grows_against_a_relay_that_fails_right_after_welcome(
    members: list[Member],
) -> None:
    # A relay that names a new store every time and then refuses: each connection
    # reached WELCOME, but none did anything useful, so the waits must grow.
    async def refuse(session: FakeSession) -> None:
        relay.store_id = bytes([session.index + 1]) * 16
        session.send(encode_error(ErrorCode.INTERNAL, "out of disk"))

    relay = FakeRelay(refuse)
    async with fake_relay(relay):
        client = client_for(members[1], relay, presence=False, backoff_cap=5.0)
        async with client:
            waits = []
            while len(waits) < 6:
                event = await expect(client, ConnectionChanged, lambda e: e.retry_in is not None)
                waits.append(event.retry_in)
    # Attempt k waits between half and all of min(cap, base * 2^k): base is 0.02.
    assert waits[5] >= 0.02 * 2**5 / 2, waits


async def test_the_presence_backoff_grows_against_a_presence_port_that_drops_at_once(
    members: list[Member],
) -> None:
    async def drop(session: FakeSession) -> None:
        session.send(encode_presence([0]))  # and hang up

    relay = FakeRelay(presence_play=drop)
    async with fake_relay(relay):
        client = client_for(members[0], relay, backoff_cap=5.0)
        async with client:
            waits = []
            while len(waits) < 6:
                event = await expect(
                    client,
                    ConnectionChanged,
                    lambda e: e.channel == "presence" and bool(e.retry_in),
                )
                waits.append(event.retry_in)
    assert waits[5] >= 0.02 * 2**5 / 2, waits


async def test_the_backoff_starts_again_after_a_connection_that_brought_a_message(
    members: list[Member],
) -> None:
    sealed = [members[0].seal(f"\x01\x00\x00\x00\x00m{i}".encode()).sealed for i in range(6)]

    async def deliver_then_refuse(session: FakeSession) -> None:
        if session.index < len(sealed):
            session.send(encode_deliver(session.index + 1, sealed[session.index]))
            relay.head = session.index + 1  # the next WELCOME's
        session.send(encode_error(ErrorCode.INTERNAL, "out of disk"))

    relay = FakeRelay(deliver_then_refuse)
    async with fake_relay(relay):
        client = client_for(members[1], relay, presence=False, backoff_cap=5.0)
        async with client:
            waits = []
            while len(waits) < 5:
                event = await expect(client, ConnectionChanged, lambda e: e.retry_in is not None)
                waits.append(event.retry_in)
    assert max(waits) <= 0.02, waits


async def test_a_relay_that_no_longer_holds_the_anchor_is_read_on_from_it_without_a_restart(
    members: list[Member],
) -> None:
    # Retention removed seq 2, the last message bob read: the relay's replay starts at 3.
    one, two, three = (members[0].seal(text_payload(t)).sealed for t in ("1", "2", "3"))

    async def play(session: FakeSession) -> None:
        if session.index == 0:
            session.send(encode_deliver(1, one), encode_deliver(2, two))
            relay.head = 3
            await session.writer.drain()
            await session.next_frame()  # bob answers nothing: hang up after a PING
            return
        assert session.hello.resume_after == 1  # just before bob's anchor, seq 2
        session.send(encode_deliver(3, three))
        await session.serve()

    relay = FakeRelay(play)
    async with fake_relay(relay):
        client = client_for(members[1], relay, presence=False)
        async with client:
            events = []
            while len([e for e in events if isinstance(e, MessageReceived)]) < 3:
                events.append(await client.events.get())
            assert not any(isinstance(e, StoreChanged) for e in events)
            assert relay.connections() == 2
    assert members[1].relay_cursor == 3


async def test_another_message_at_the_anchors_seq_makes_the_member_read_the_store_again(
    members: list[Member],
) -> None:
    # The relay's store went back under the same id, and a new message took seq 2.
    one, two, new = (members[0].seal(text_payload(t)).sealed for t in ("1", "2", "n"))

    async def play(session: FakeSession) -> None:
        if session.index == 0:
            session.send(encode_deliver(1, one), encode_deliver(2, two))
            relay.head = 2
            await session.writer.drain()
            await session.next_frame()
            return
        stored = {1: one, 2: new}
        session.send(
            *(encode_deliver(s, m) for s, m in stored.items() if s > session.hello.resume_after)
        )
        await session.serve()

    relay = FakeRelay(play)
    async with fake_relay(relay):
        client = client_for(members[1], relay, presence=False)
        async with client:
            changed = await expect(client, StoreChanged)
            assert (changed.went_back, changed.old_cursor) == (True, 2)
            got = await expect(client, MessageReceived)
            assert got.received.payload.endswith(b"n") and got.received.seq == 2
            assert [hello.resume_after for hello in relay.hellos[Port.RELAY]] == [0, 1, 0]
    assert members[1].relay_cursor == 2


# --- fuzzing the relay's frames -----------------------------------------------------

EDGES = [0, 1, 2, 3, 63, 64, 2**31, 2**63 - 1, 2**63, 2**64 - 1]
numbers = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1))
seqs = st.one_of(st.integers(1, 3), numbers)  # often seqs a relay could have assigned


# The fuzzed member: bob (index 1) of the "hostile" kit set of the `members` fixture.
PAD_ID, N, K, BOB = derived("hostile", "pad_id", 16), 3, 64, 1


def _envelope(sender: int, counter: int, offset: int, length: int, tail: bytes) -> bytes:
    return pack_header(PAD_ID, sender, N, counter, offset, length % 2**32) + tail


envelopes = st.builds(
    _envelope,
    st.sampled_from([BOB, 0, 0xFFFF]),
    st.one_of(st.sampled_from([0, K - 1, K, *HUGE]), numbers),
    numbers,
    numbers,
    st.binary(max_size=80),
)
frames = st.one_of(
    st.builds(encode_deliver, seqs, st.one_of(envelopes, st.binary(max_size=120))),
    st.builds(encode_deliver, seqs, envelopes),
    st.builds(encode_accepted, seqs, numbers),
    st.builds(lambda body: encode_frame(FrameType.PONG, body), st.binary(max_size=70)),
    st.builds(
        lambda code, reason: encode_frame(FrameType.ERROR, code.to_bytes(2, "big") + reason),
        st.integers(0, 0xFFFF),
        st.binary(max_size=40),
    ),
    st.builds(encode_presence, st.lists(st.integers(0, 0xFFFF), max_size=5)),
    st.builds(
        encode_member,
        st.sampled_from([FrameType.ONLINE, FrameType.OFFLINE]),
        st.integers(0, 0xFFFF),
    ),
    st.builds(encode_frame, st.integers(0, 255), st.binary(max_size=60)),
)


@settings(
    max_examples=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    relay_frames=st.lists(frames, min_size=1, max_size=6),
    presence_frames=st.lists(frames, max_size=3),
)
@example(
    relay_frames=[encode_deliver(1, _envelope(BOB, 2**63, 0, 8, bytes(40)))], presence_frames=[]
)
@example(relay_frames=[encode_accepted(1, 2**64 - 1)], presence_frames=[])
def test_no_frames_a_relay_sends_leave_the_client_silently_dead(
    members: list[Member], relay_frames: list[bytes], presence_frames: list[bytes]
) -> None:
    """Whatever the relay (or presence server) sends, the client ends in a visible state:
    it reconnects, or it stops with `failure` set. On failure Hypothesis prints the
    frames and a @reproduce_failure blob that replays them."""
    assert members[BOB].header.pad_id == PAD_ID
    note(f"relay frames: {[f.hex() for f in relay_frames]}")
    asyncio.run(_survives(members[BOB], relay_frames, presence_frames))


async def _survives(bob: Member, relay_frames: list[bytes], presence_frames: list[bytes]) -> None:
    async def play(session: FakeSession) -> None:
        if session.index == 0:
            session.send(*relay_frames)  # and then hang up
            await session.writer.drain()
        else:
            await session.serve()

    async def presence(session: FakeSession) -> None:
        if session.index == 0:
            session.send(*presence_frames)
        await session.serve()

    relay = FakeRelay(play, presence_play=presence)
    async with fake_relay(relay):
        client = client_for(bob, relay)
        async with client:

            def visible() -> bool:
                stopped = client.state is ClientState.FAILED and client.failure is not None
                return stopped or relay.connections(Port.RELAY) >= 2

            await until(visible, what="a reconnect, or a stop with the error")
            tasks = client._tasks
            assert not any(t.done() for t in tasks) or client.failure is not None
