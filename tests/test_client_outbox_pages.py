"""The pending outbox goes out a page at a time (client/outbox.py): whatever it holds,
every message is sent in counter order and once per connection, while the connection
holds about two pages of it. Real SQLite, a real relay on loopback, real sockets; the
page is made small so that a few dozen messages span many pages."""

# ruff: noqa: F811 - the relay fixture imported from test_client is a test parameter

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ghostline.client import ClientState
from ghostline.client import client as client_module
from ghostline.client.outbox import OutQueue, PageLimit
from ghostline.errors import StateError
from ghostline.protocol.frames import Frame, FrameType
from ghostline.protocol.payload import TextPayload
from ghostline.state.entries import OutboxEntry
from ghostline.state.member import Member
from ghostline.state.store import Store
from helpers import opened_members, unsent
from test_client import Relay, client_for, relay, through_proxy  # noqa: F401 - relay: a fixture
from waiting import until

PAGE = PageLimit(size=700, entries=4)  # three messages of the size sent here (226 bytes)


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    with opened_members(tmp_path / "kits", 2, seed="pages", slice_len=1 << 15) as opened:
        yield opened


class Held:
    """The most entries and sealed bytes the connections' queues held at once."""

    def __init__(self) -> None:
        self.entries = 0
        self.size = 0


class Watching(deque[OutboxEntry]):
    def __init__(self, note: Callable[[], None]) -> None:
        super().__init__()
        self.note = note

    def append(self, entry: OutboxEntry) -> None:
        super().append(entry)
        self.note()

    def extend(self, entries: Iterable[OutboxEntry]) -> None:
        super().extend(entries)
        self.note()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Held:
    """Every connection's OutQueue, watched: what it holds to write now (`entries`)
    and what was sealed during the connection (`later`)."""
    record = Held()

    class WatchedQueue(OutQueue):
        def __init__(self) -> None:
            super().__init__()
            self.entries = Watching(self.note)
            self.later = Watching(self.note)

        def note(self) -> None:
            now = [*self.entries, *getattr(self, "later", ())]
            record.entries = max(record.entries, len(now))
            record.size = max(record.size, sum(len(e.sealed) for e in now))

    monkeypatch.setattr(client_module, "OutQueue", WatchedQueue)
    return record


def texts(first: int, count: int) -> list[bytes]:
    return [TextPayload(f"message {i:04d} " + "x" * 150, 1).encode() for i in range(first, count)]


def seal_offline(member: Member, count: int) -> list[OutboxEntry]:
    """Seal `count` messages while no client runs (as the apps do offline)."""
    entries: list[OutboxEntry] = []
    for group in range(0, count, 8):
        entries += member.seal_many(texts(group, min(group + 8, count)))
    return entries


def publishes(into: list[bytes]) -> Callable[[str, Frame], bytes | None]:
    """A proxy hook that records the body of every PUBLISH on its way to the relay."""

    def hook(direction: str, frame: Frame) -> bytes | None:
        if direction == "up" and frame.type == FrameType.PUBLISH:
            into.append(frame.body)
        return None

    return hook


def gate(member: Member, at: int) -> tuple[threading.Event, threading.Event]:
    """Hold the member's `at`-th read of its pending outbox (0: the count when a
    connection begins, then its pages) in the durable worker until `go` is set; `there`
    is set once the worker waits there."""
    there, go = threading.Event(), threading.Event()
    calls = 0

    def held_read(real: Callable[..., Any]) -> Callable[..., Any]:
        def read(*args: Any) -> Any:
            nonlocal calls
            calls, mine = calls + 1, calls
            if mine == at:
                there.set()
                assert go.wait(10), "the test never let the read go on"
            return real(*args)

        return read

    member.pending_span = held_read(member.pending_span)  # type: ignore[method-assign]
    member.pending_page = held_read(member.pending_page)  # type: ignore[method-assign]
    return there, go


def assert_at_most_two_pages(held: Held, largest_group: int) -> None:
    """One page to write and what was sealed meanwhile (a page and one group at most)."""
    assert 0 < held.entries <= 3 + PAGE.entries + largest_group
    assert held.size <= 2 * PAGE.size + largest_group * 226


async def test_an_outbox_of_many_pages_goes_out_whole_in_order_and_once(
    members: list[Member], relay: Relay, held: Held
) -> None:
    alice = members[0]
    entries = seal_offline(alice, 40)
    sent: list[bytes] = []
    async with through_proxy(relay, publishes(sent)) as (via, _):
        client = client_for(alice, via, presence=False)
        client.outbox.page = PAGE
        async with client:
            seqs = [await client.wait_accepted(e.counter, 10) for e in entries]
    assert sent == [e.sealed for e in entries]  # byte for byte, in counter order, once
    assert seqs == list(range(1, 41))
    assert held.entries == 3 and held.size <= PAGE.size  # never the 40 at once
    assert unsent(alice) == []


@pytest.mark.parametrize(
    ("at", "live"),
    [(0, 2), (1, 2), (13, 2), (0, 9), (1, 9), (13, 9)],
    ids=[
        "sealed-before-the-count",
        "sealed-after-the-first-page",
        "sealed-after-the-last-page",
        "more-than-a-page-sealed-before-the-count",
        "more-than-a-page-sealed-after-the-first-page",
        "more-than-a-page-sealed-after-the-last-page",
    ],
)
async def test_messages_sealed_during_the_connection_go_out_after_the_pending_ones_once(
    members: list[Member], relay: Relay, held: Held, at: int, live: int
) -> None:
    """The outbox holds 39 (13 pages of 3: the count, then 13 reads);
    `live` more are sealed while the worker is held at read `at`, so they commit
    right after it: on each side of every kind of page boundary."""
    alice = members[0]
    pending = seal_offline(alice, 39)
    there, go = gate(alice, at)
    sent: list[bytes] = []
    async with through_proxy(relay, publishes(sent)) as (via, _):
        client = client_for(alice, via, presence=False)
        client.outbox.page = PAGE
        async with client:
            await until(there.is_set, what="the worker reading the outbox")
            sealing = asyncio.create_task(client.send_many(texts(39, 39 + live)))
            await asyncio.sleep(0)  # one turn: the task queues its seal behind the read
            go.set()
            sealed = await sealing
            everything = pending + sealed
            seqs = [await client.wait_accepted(e.counter, 10) for e in everything]
            assert client.connections == 1
    assert sent == [e.sealed for e in everything]
    assert seqs == list(range(1, 40 + live))
    assert_at_most_two_pages(held, live)


async def test_a_reconnect_in_the_middle_of_paging_sends_the_rest(
    members: list[Member], relay: Relay, held: Held
) -> None:
    """The first path lets 7 of 20 through (the third page is cut after its first) and
    then breaks; the client fails over to the second path, which must carry exactly
    the 13 the relay did not accept, in order."""
    alice = members[0]
    entries = seal_offline(alice, 20)
    first: list[bytes] = []
    second: list[bytes] = []

    def let_seven_through(direction: str, frame: Frame) -> bytes | None:
        if direction == "up" and frame.type == FrameType.PUBLISH:
            first.append(frame.body)
            return None if len(first) <= 7 else b""
        return None

    async with (
        through_proxy(relay, let_seven_through) as (cut, cut_proxy),
        through_proxy(relay, publishes(second)) as (whole, _),
    ):
        client = client_for(alice, cut, whole, presence=False)
        client.outbox.page = PAGE
        async with client:
            assert [await client.wait_accepted(e.counter, 10) for e in entries[:7]] == list(
                range(1, 8)
            )
            await until(lambda: len(first) > 7, what="a PUBLISH held on the first path")
            cut_proxy.drop_connections()
            seqs = [await client.wait_accepted(e.counter, 10) for e in entries[7:]]
            assert client.connections == 2
    assert first[:8] == [e.sealed for e in entries[:8]]
    assert second == [e.sealed for e in entries[7:]]
    assert seqs == list(range(8, 21))
    assert held.entries == 3 and held.size <= PAGE.size


async def test_a_page_that_cannot_be_read_stops_the_client_visibly(
    members: list[Member], relay: Relay
) -> None:
    alice = members[0]
    seal_offline(alice, 10)
    reads = 0
    real = alice.pending_page

    def failing(*args: Any) -> list[OutboxEntry]:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise StateError("the state database could not be read")
        return real(*args)

    alice.pending_page = failing  # type: ignore[method-assign]
    client = client_for(alice, relay.address, presence=False)
    client.outbox.page = PAGE
    async with client:
        await until(lambda: client.state is ClientState.FAILED, what="the client failing")
        assert isinstance(client.failure, StateError)
    assert reads == 2


def test_a_page_holds_at_most_its_entries_and_bytes_but_one_however_long(
    members: list[Member],
) -> None:
    alice = members[0]
    entries = seal_offline(alice, 10)
    alice.mark_accepted(entries[2].counter, 1)
    counters = [e.counter for e in entries]

    def page(after: int, upto: int, size: int, most: int) -> list[int]:
        return [e.counter for e in alice.pending_page(after, upto, size, most)]

    assert page(-1, 100, 10_000, 4) == [0, 1, 3, 4]  # the accepted one is not pending
    assert page(-1, 100, 3 * 226, 100) == [0, 1, 3]
    assert page(-1, 100, 3 * 226 - 1, 100) == [0, 1]
    assert page(-1, 100, 1, 100) == [0]  # one, however long
    assert page(4, 7, 10_000, 100) == [5, 6, 7]
    assert page(9, 100, 10_000, 100) == []
    assert [e.sealed for e in alice.pending_page(3, 5, 10_000, 10)] == [
        e.sealed for e in entries[4:6]
    ]
    assert (
        alice.pending_span() == (9, 9) and alice.pending_counters() == counters[:2] + counters[3:]
    )


def test_the_outbox_is_read_a_page_at_a_time_and_never_whole(members: list[Member]) -> None:
    # A whole-outbox read would bring a file sealed offline back into memory at once;
    # what the tests need of the outbox they read through the pages (helpers.unsent).
    assert not hasattr(Member, "pending") and not hasattr(Store, "pending")
    alice = members[0]
    entries = seal_offline(alice, 10)
    alice.mark_accepted(entries[2].counter, 1)
    assert unsent(alice) == entries[:2] + entries[3:]


def entry(counter: int, size: int = 100) -> OutboxEntry:
    return OutboxEntry(counter, counter * size, size, bytes([counter]) * size, None)


def counters(entries: Iterable[OutboxEntry]) -> list[int]:
    return [e.counter for e in entries]


def test_a_connections_queue_keeps_no_page_limit_of_its_own() -> None:
    # The limit is the outbox's alone (Outbox.page), passed to the queue whenever it
    # decides: shrinking it there shrinks every connection, begun before or after.
    assert not hasattr(OutQueue(), "page")


def test_a_queue_leaves_to_the_outbox_what_it_held_when_the_connection_began() -> None:
    queue = OutQueue()
    page = PageLimit(size=10_000, entries=3)
    queue.add([entry(3), entry(4)], page)  # committed around the count: 3 before it, 4 after
    queue.start((2, 3), page)
    assert counters(queue.later) == [4] and queue.paging
    queue.paged(([entry(1), entry(3)], 3))  # 2 was ACCEPTED meanwhile
    assert not queue.paging
    queue.add([entry(5)], page)
    assert queue.take_later() and not queue.take_later()
    assert counters(queue.entries) == [1, 3, 4, 5]
    queue.add([entry(5), entry(6)], page)  # 5 again (it cannot, but once is once)
    assert queue.take_later()
    assert counters(queue.entries) == [1, 3, 4, 5, 6]


def test_a_queue_gives_back_to_the_outbox_more_than_a_page_sealed_meanwhile() -> None:
    queue = OutQueue()
    page = PageLimit(size=10_000, entries=3)
    queue.start((2, 1), page)
    queue.add([entry(2), entry(3)], page)
    queue.add([entry(4), entry(5)], page)  # four: more than a page, so the outbox has them
    assert list(queue.later) == [] and queue.upto == 5
    queue.paged(([entry(0), entry(1), entry(2)], 5))
    queue.add([entry(6)], page)
    queue.paged(([], 5))  # 3, 4 and 5 were ACCEPTED meanwhile
    assert not queue.paging and queue.take_later()
    assert counters(queue.entries) == [0, 1, 2, 6]
    big = PageLimit(size=250, entries=100)
    queue.add([entry(7), entry(8), entry(9)], big)  # 300 sealed bytes: more than a page too
    assert list(queue.later) == [] and queue.upto == 9 and queue.paging


def test_an_empty_page_read_before_more_was_given_back_does_not_skip_it() -> None:
    queue = OutQueue()
    page = PageLimit(size=10_000, entries=2)
    queue.start((1, 0), page)
    queue.add([entry(1), entry(2), entry(3)], page)  # given back while a read up to 0 runs
    queue.paged(([entry(0)], 0))
    assert queue.paging and queue.after == 0 and queue.upto == 3
    queue.paged(([], 0))  # a read that still had the old limit
    assert queue.paging
