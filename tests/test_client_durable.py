"""No commit of the member runs on the event loop: sealing and receiving go through the
client's one durable worker thread (client/durable.py), in order, while the loop keeps
answering. A deliberately slow commit proves it: each commit stalls until a coroutine
on the loop has ticked meanwhile, which it could not do if the commit held the loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ghostline.client import Client, MessageAccepted, MessageReceived, RelayAddress
from ghostline.client.session import Session
from ghostline.protocol.frames import FrameType, Hello, Port, encode_frame
from ghostline.protocol.payload import TextPayload
from ghostline.relay import RelayLimits, RelayServer, SqliteBackend
from ghostline.state.member import Member
from helpers import opened_members, unsent
from waiting import until

# The most a commit waits for the loop to show it runs (after that, it records that it did not).
STALL = 10.0


class SlowCommits:
    """Makes every commit of `member`'s state database stall, like a slow fsync, until
    the event loop has run a tick of `ticker` meanwhile. Records, per commit, the
    thread it ran on and whether the loop ticked while it stalled."""

    def __init__(self, member: Member) -> None:
        self.stalled = threading.Event()
        self.loop_ran = threading.Event()
        self.commits: list[tuple[int, bool]] = []
        real = member.store.transaction

        @contextlib.contextmanager
        def slow_transaction() -> Iterator[object]:
            with real() as conn:
                yield conn
                self.loop_ran.clear()
                self.stalled.set()
                ticked = self.loop_ran.wait(STALL)
                self.stalled.clear()
                self.commits.append((threading.get_ident(), ticked))

        member.store.transaction = slow_transaction  # type: ignore[method-assign]

    async def ticker(self) -> None:
        """A coroutine on the loop that ticks: it frees whichever commit stalls."""
        while True:
            await asyncio.sleep(0.005)
            if self.stalled.is_set():
                self.loop_ran.set()


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    with opened_members(tmp_path / "kits", 3, seed="durable") as opened:
        yield opened


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayAddress]:
    server = RelayServer(SqliteBackend(tmp_path / "relay.sqlite"), RelayLimits())
    port, presence = await server.start("127.0.0.1", 0, 0)
    yield RelayAddress("127.0.0.1", port, presence)
    await server.close()


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    task = asyncio.ensure_future(coro)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_slow_commits_leave_the_loop_running_and_messages_in_order(
    members: list[Member], relay: RelayAddress
) -> None:
    alice, bob = members[0], members[1]
    slow_alice, slow_bob = SlowCommits(alice), SlowCommits(bob)
    loop_thread = threading.get_ident()
    texts = [f"message {i}" for i in range(6)]
    sender = Client(alice, [relay], presence=False, receive=False)
    receiver = Client(bob, [relay], presence=False)
    async with running(slow_alice.ticker()), running(slow_bob.ticker()), sender, receiver:
        await receiver.wait_connected(10)
        entries = [await sender.send_text(text) for text in texts]
        # send returned after the commit: the entries are in the durable outbox
        assert [e.counter for e in entries] == list(range(len(texts)))
        got: list[MessageReceived] = []
        async with asyncio.timeout(30):
            while len(got) < len(texts):
                event = await receiver.events.get()
                if isinstance(event, MessageReceived):
                    # persist before output: the message is recorded when it is shown
                    assert bob.relay_cursor >= event.received.seq
                    got.append(event)
        await until(lambda: len(slow_alice.commits) >= 2 * len(texts), what="ACCEPTED recorded")
    assert [e.received.seq for e in got] == list(range(1, len(texts) + 1))
    assert [e.payload_obj.text for e in got if isinstance(e.payload_obj, TextPayload)] == texts
    for slow in (slow_alice, slow_bob):
        assert slow.commits, "the member committed nothing"
        assert all(thread != loop_thread for thread, _ in slow.commits), "a commit ran on the loop"
        assert all(ticked for _, ticked in slow.commits), "the loop stood still during a commit"


async def test_a_relay_on_the_same_loop_answers_pings_while_receives_commit(
    members: list[Member], relay: RelayAddress
) -> None:
    # The relay runs on the clients' own loop: each of Bob's commits stalls until a raw
    # PING to it, from Carol's connection, has come back as PONG.
    alice, bob, carol = members
    slow = SlowCommits(bob)
    signer = Ed25519PrivateKey.from_private_bytes(carol.header.signing_key)
    header = carol.header
    hello = Hello(header.pad_id, 2, tuple(m.verify_key for m in header.members), 2**62)
    raw = await Session.open(relay, relay.port, tls=None, proxy=None, timeout=10)
    await raw.join(Port.RELAY, hello, signer.sign, 10)
    pongs = 0

    async def pinger() -> None:
        nonlocal pongs
        while True:
            await asyncio.sleep(0.005)
            if slow.stalled.is_set():
                raw.write(encode_frame(FrameType.PING, b"alive"))
                while (await raw.read()).type != FrameType.PONG:
                    pass  # Carol's DELIVERs
                pongs += 1
                slow.loop_ran.set()

    sender = Client(alice, [relay], presence=False, receive=False)
    receiver = Client(bob, [relay], presence=False)
    async with running(pinger()), sender, receiver:
        await receiver.wait_connected(10)
        for text in ("one", "two", "three"):
            await sender.send_text(text)
        got = []
        async with asyncio.timeout(30):
            while len(got) < 3:
                if isinstance(event := await receiver.events.get(), MessageReceived):
                    got.append(event.received.seq)
    await raw.close()
    assert got == [1, 2, 3]
    assert slow.commits and all(ticked for _, ticked in slow.commits)
    assert pongs >= len(slow.commits)


async def test_send_returns_only_after_its_commit_and_accepted_is_recorded_first(
    members: list[Member], relay: RelayAddress
) -> None:
    alice = members[0]
    slow = SlowCommits(alice)
    async with (
        running(slow.ticker()),
        Client(alice, [relay], presence=False, receive=False) as client,
    ):
        await client.wait_connected(10)
        entry = await client.send_text("hello")
        assert [e.counter for e in unsent(alice)] == [entry.counter]
        async with asyncio.timeout(10):
            while not isinstance(event := await client.events.get(), MessageAccepted):
                pass
        assert alice.accepted_seq(entry.counter) == event.seq == 1
