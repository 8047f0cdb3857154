"""The chat app against a real relay on 127.0.0.1, with real kits, members and clients.

Alice runs the app (Pilot); bob is a second real `Client` in the same event loop. The
relay is the real `RelayServer` in-process on port 0 with a real SQLite store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ghostline.client import Client, Event, MessageReceived
from ghostline.client.transport import RelayAddress
from ghostline.files import FileAssembly, OutgoingFile, split_file
from ghostline.files.spooled import SpooledParts
from ghostline.protocol.payload import FileChunk, FileHeader, TextPayload, decode
from ghostline.relay import RelayLimits, RelayServer, Retention, SqliteBackend
from ghostline.state.limits import MAX_SEAL_GROUP
from ghostline.state.member import Member
from ghostline.tui.app import ChatApp
from ghostline.tui.messagelog import MessageLine, MessageLog, NewSinceMarker
from ghostline.tui.screens import ConfirmScreen
from ghostline.tui.widgets import ChatInput, MemberList, PadGauge
from ghostline.units import format_size
from helpers import make_kit_set
from waiting import until

SIZE = (110, 32)
WAIT = 10.0


@dataclass
class Group:
    relay: RelayServer
    kits: list[Path]
    members: list[Member]
    home: Path

    def client(self, index: int) -> Client:
        addr = RelayAddress("127.0.0.1", self.relay.relay_port, self.relay.presence_port)
        return Client(self.members[index], [addr], backoff_base=0.05, backoff_cap=0.5)

    def app(self, client: Client) -> ChatApp:
        return ChatApp(
            client,
            relay=f"127.0.0.1:{self.relay.relay_port}",
            transport="no TLS · no proxy",
            downloads=lambda: self.home / "downloads",
        )


async def make_group(
    tmp_path: Path, home: Path, *, slice_len: int, auth_keys: int
) -> AsyncIterator[Group]:
    kits = make_kit_set(
        tmp_path / "kits", ["alice", "bob"], slice_len=slice_len, auth_keys=auth_keys
    )
    members = [Member.open(k) for k in kits]
    backend = SqliteBackend(tmp_path / "relay.sqlite", Retention())
    relay = RelayServer(backend, RelayLimits())
    await relay.start("127.0.0.1", 0, 0)
    try:
        yield Group(relay, kits, members, home)
    finally:
        await relay.close()
        for m in members:
            m.close()


@pytest.fixture
async def group(tmp_path: Path, ghostline_home: Path) -> AsyncIterator[Group]:
    async for g in make_group(tmp_path, ghostline_home, slice_len=1 << 20, auth_keys=200):
        yield g


@pytest.fixture
async def big_group(tmp_path: Path, ghostline_home: Path) -> AsyncIterator[Group]:
    async for g in make_group(tmp_path, ghostline_home, slice_len=4 << 20, auth_keys=200):
        yield g


@pytest.fixture
async def tiny_group(tmp_path: Path, ghostline_home: Path) -> AsyncIterator[Group]:
    async for g in make_group(tmp_path, ghostline_home, slice_len=4096, auth_keys=3):
        yield g


async def next_event(client: Client, kind: type, timeout: float = WAIT) -> Event:
    async with asyncio.timeout(timeout):
        while True:
            event = await client.events.get()
            if isinstance(event, kind):
                return event


def texts(app: ChatApp) -> list[str]:
    return [line.line.text for line in app.query(MessageLine)]


async def test_send_receive_and_presence_over_a_real_relay(group: Group) -> None:
    app = group.app(group.client(0))
    bob = group.client(1)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.connected and 0 in app.panel.online, poll=pilot.pause)
        members = app.query_one(MemberList)
        assert not any(r.online for r in members.rows if r.index == 1)
        assert not any("came online" in t for t in texts(app))  # who was there already

        await bob.start()
        await bob.wait_connected(WAIT)
        await until(lambda: any(r.online for r in members.rows if r.index == 1), poll=pilot.pause)
        assert "bob came online" in texts(app)

        await pilot.press(*"hello bob", "enter")
        event = await next_event(bob, MessageReceived)
        assert isinstance(event, MessageReceived)
        assert event.payload_obj is not None
        assert isinstance(event.payload_obj, TextPayload)
        assert event.payload_obj.text == "hello bob"
        own = app.query_one(MessageLog).own_lines[0]
        await until(lambda: own.line.state == "stored", poll=pilot.pause)

        entry = await bob.send_text("hi alice")
        await bob.wait_accepted(entry.counter, WAIT)
        await until(lambda: "hi alice" in texts(app), poll=pilot.pause)

        await bob.stop()
        await until(
            lambda: not any(r.online for r in members.rows if r.index == 1), poll=pilot.pause
        )
        assert "bob went offline" in texts(app)


async def test_history_is_shown_when_the_app_opens_again(group: Group) -> None:
    bob = group.client(1)
    async with bob:
        for text in ("one", "two", "three"):
            entry = await bob.send_text(text)
            await bob.wait_accepted(entry.counter, WAIT)
    first = group.app(group.client(0))
    async with first.run_test(size=SIZE) as pilot:
        await until(lambda: texts(first) == ["one", "two", "three"], poll=pilot.pause)
    again = group.app(group.client(0))
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert texts(again) == ["one", "two", "three"]  # from history, before any event


async def test_pad_gauge_moves_by_the_sealed_length(group: Group) -> None:
    app = group.app(group.client(0))
    async with app.run_test(size=SIZE) as pilot:
        gauge = app.query_one(PadGauge)
        before = gauge.pad
        assert before is not None
        await pilot.press(*"exactly this", "enter")
        await until(lambda: gauge.pad != before, poll=pilot.pause)
        assert gauge.pad is not None
        usage = group.members[0].usage().me
        assert gauge.pad.bytes_left == usage.bytes_left == before.bytes_left - (5 + 12)
        assert gauge.pad.msgs_left == usage.keys_left == before.msgs_left - 1


async def test_exhaustion_disables_input(tiny_group: Group) -> None:
    app = tiny_group.app(tiny_group.client(0))
    async with app.run_test(size=SIZE) as pilot:
        chat_input = app.query_one(ChatInput)
        for i in range(3):
            assert not chat_input.disabled
            await pilot.press(*f"m{i}", "enter")
            await until(lambda i=i: i in app.query_one(MessageLog).own_lines, poll=pilot.pause)
        await until(lambda: chat_input.disabled, poll=pilot.pause)
        assert tiny_group.members[0].usage().me.keys_left == 0


async def test_file_round_trip_both_ways(group: Group, tmp_path: Path) -> None:
    data = os.urandom(150_000)  # three chunks of 64 KiB
    source = tmp_path / "plan.bin"
    source.write_bytes(data)
    app = group.app(group.client(0))
    bob = group.client(1)
    async with app.run_test(size=SIZE) as pilot:
        await bob.start()
        # alice -> bob: /file, confirm, and bob's client reassembles the parts
        app.query_one(ChatInput).load_text(f"/file {source}")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ConfirmScreen), poll=pilot.pause)
        await pilot.press("y")
        assembly: FileAssembly | None = None
        got: bytes | None = None
        async with asyncio.timeout(WAIT):
            while got is None:
                event = await bob.events.get()
                if not isinstance(event, MessageReceived):
                    continue
                part = event.payload_obj
                assert isinstance(part, FileHeader | FileChunk)
                assembly = assembly or FileAssembly(part.transfer_id)
                got = assembly.add(part)
        assert got == data
        # The sender's progress: parts stored at the relay (ACCEPTED), 0 to 4 of 4.
        await until(lambda: any(d == t == 4 for k, d, t in sent_progress(app)), poll=pilot.pause)
        out = sent_progress(app)
        assert [done for _, done, _ in out] == list(range(5))

        # bob -> alice: the app shows progress and saves the file to downloads
        header, chunks = split_file(data, 50_000, transfer_id=b"B" * 8, sent_at=1, name="b.bin")
        counters = [(await bob.send(header.encode())).counter]
        for chunk in chunks:
            counters.append((await bob.send(chunk.encode())).counter)
        saved = group.home / "downloads" / "b.bin"
        await until(lambda: saved.exists(), poll=pilot.pause)
        assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(data).digest()
        key = f"in-1-{(b'B' * 8).hex()}"
        progress = [done for k, done, _ in app.files.log if k == key]
        assert progress == [0, 50_000, 100_000, 150_000]
        await bob.stop()


async def offer_file(app: ChatApp, pilot: Any, source: Path) -> list[OutgoingFile]:
    """Type `/file SOURCE` and wait for the question; the files the app then sends."""
    sent: list[OutgoingFile] = []
    send = app.files.send

    async def recorded(outgoing: OutgoingFile) -> None:
        sent.append(outgoing)
        await send(outgoing)

    app.files.send = recorded  # type: ignore[method-assign]
    app.query_one(ChatInput).load_text(f"/file {source}")
    await pilot.press("enter")
    await until(lambda: isinstance(app.screen, ConfirmScreen), poll=pilot.pause)
    return sent


def rewrite(source: Path, data: bytes) -> None:
    """New contents of the same size, with a later mtime (a clock tick may be coarse)."""
    source.write_bytes(data)
    later = source.stat().st_mtime_ns + 10**9
    os.utime(source, ns=(later, later))


def sealed_parts(member: Member) -> list[FileHeader | FileChunk]:
    parts = [decode(entry.payload) for entry in member.history()]
    return [p for p in parts if isinstance(p, FileHeader | FileChunk)]


async def test_a_large_file_is_read_from_disk_as_it_is_sealed_and_arrives_whole(
    big_group: Group, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)  # a header and 48 parts: two seal groups
    source = tmp_path / "scan.pdf"
    source.write_bytes(data)
    app = big_group.app(big_group.client(0))
    bob = big_group.client(1)
    async with app.run_test(size=SIZE) as pilot:
        await bob.start()
        sent = await offer_file(app, pilot, source)
        await pilot.press("y")
        assembly: FileAssembly | None = None
        got: bytes | None = None
        async with asyncio.timeout(WAIT * 3):
            while got is None:
                event = await bob.events.get()
                if isinstance(event, MessageReceived):
                    part = event.payload_obj
                    assert isinstance(part, FileHeader | FileChunk)
                    assembly = assembly or FileAssembly(part.transfer_id)
                    got = assembly.add(part)
        [outgoing] = sent
        assert isinstance(outgoing.payloads, SpooledParts)  # read a group at a time
        assert outgoing.messages == 49 > MAX_SEAL_GROUP
        assert hashlib.sha256(got).digest() == outgoing.header.sha256
        assert got == data
        await bob.stop()


async def test_a_file_changed_after_the_question_is_refused_and_nothing_is_sent(
    group: Group, tmp_path: Path
) -> None:
    source = tmp_path / "plan.txt"
    source.write_bytes(b"version one " * 10_000)
    app = group.app(group.client(0))
    before = group.members[0].usage().me
    async with app.run_test(size=SIZE) as pilot:
        await offer_file(app, pilot, source)
        rewrite(source, b"version two " * 10_000)  # while the person reads the question
        await pilot.press("y")
        said = (
            "/file plan.txt: plan.txt changed after it was read; nothing of it was sent and "
            "no pad was used. Send it again with /file."
        )
        await until(lambda: said in texts(app), poll=pilot.pause)
    assert sealed_parts(group.members[0]) == []
    after = group.members[0].usage().me
    assert (after.bytes_left, after.keys_left) == (before.bytes_left, before.keys_left)


async def test_a_file_changed_between_groups_stops_and_says_what_was_spent(
    big_group: Group, tmp_path: Path
) -> None:
    source = tmp_path / "scan.pdf"
    source.write_bytes(b"1" * (3 << 20))
    app = big_group.app(big_group.client(0))
    async with app.run_test(size=SIZE) as pilot:
        client = app.files.client
        send_many = client.send_many

        async def then_edit(payloads: Any) -> Any:
            entries = await send_many(payloads)
            rewrite(source, b"2" * (3 << 20))  # after the first group is sealed
            return entries

        client.send_many = then_edit  # type: ignore[method-assign]
        sent = await offer_file(app, pilot, source)
        await pilot.press("y")
        await until(lambda: any("nothing more of it was sent" in t for t in texts(app)),
                    poll=pilot.pause)  # fmt: skip
        [outgoing] = sent
        spent = format_size(sum(outgoing.pad_sizes()[:MAX_SEAL_GROUP]))
        assert texts(app)[-1] == (
            f"/file scan.pdf: scan.pdf changed after it was read, so nothing more of it was "
            f"sent. The {MAX_SEAL_GROUP} of 49 parts sent before used {spent} of your pad, "
            "which is spent; receivers never get the rest, so they cannot save the file "
            "(never a mix of two versions). Send it again with /file."
        )
    parts = sealed_parts(big_group.members[0])
    assert isinstance(parts[0], FileHeader)
    chunks = [p for p in parts if isinstance(p, FileChunk)]
    assert [c.index for c in chunks] == list(range(MAX_SEAL_GROUP - 1))  # the first group
    assert all(c.data == b"1" * len(c.data) for c in chunks)  # only what was hashed


def sent_progress(app: ChatApp) -> list[tuple[str, int, int]]:
    return [entry for entry in app.files.log if entry[0].startswith("out-")]


async def test_a_file_resumes_across_reopens_from_far_back_and_is_saved_once(
    group: Group,
) -> None:
    data = os.urandom(120_000)
    header, chunks = split_file(data, 40_000, transfer_id=b"R" * 8, sent_at=1, name="r.bin")
    parts = [header.encode(), *(c.encode() for c in chunks)]  # header + 3 chunks
    bob = group.client(1)
    async with bob:
        first = await bob.send_many(parts[:2])
        texts_ = [TextPayload(f"c{i}", 1).encode() for i in range(70)]
        chatter = []
        for start in range(0, len(texts_), MAX_SEAL_GROUP):  # one commit holds at most that
            chatter += await bob.send_many(texts_[start : start + MAX_SEAL_GROUP])
        await bob.wait_accepted(chatter[-1].counter, WAIT)
    assert [e.counter for e in first] == [0, 1]
    app = group.app(group.client(0))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: "c69" in texts(app), poll=pilot.pause)
    # Reopened: the header is 71 messages back, past the first page of history.
    again = group.app(group.client(0))
    async with again.run_test(size=SIZE) as pilot:
        await until(lambda: again.files.ready, poll=pilot.pause)
        assert [t.name for t in again.files.incoming.unfinished()] == ["r.bin"]
        async with bob:
            await bob.send_many(parts[2:])
            saved = group.home / "downloads" / "r.bin"
            await until(lambda: saved.exists(), poll=pilot.pause)
        assert saved.read_bytes() == data
    third = group.app(group.client(0))
    async with third.run_test(size=SIZE) as pilot:
        await until(lambda: third.files.ready, poll=pilot.pause)  # saves are started before this
        await until(
            lambda: all(w.is_finished for w in third.workers if w.group == "save"),
            poll=pilot.pause,
        )
        assert third.files.incoming.unfinished() == []
    assert sorted(p.name for p in (group.home / "downloads").iterdir()) == ["r.bin"]


async def test_an_own_file_cut_short_is_reported_when_the_app_opens_again(group: Group) -> None:
    header, chunks = split_file(bytes(500), 50, transfer_id=b"Q" * 8, sent_at=1, name="q.bin")
    # What quitting mid-send leaves: the header and the first chunks sealed, no more.
    group.members[0].seal_many([header.encode(), *(next(chunks).encode() for _ in range(3))])
    app = group.app(group.client(0))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.files.ready, poll=pilot.pause)
        assert texts(app)[-1] == (
            "file q.bin: sent 3 of 10 parts before the app closed; send it again with /file"
        )
        assert not any(t.startswith("sent a file") for t in texts(app))


async def test_with_history_off_a_file_cut_short_by_closing_finishes_and_then_goes(
    group: Group,
) -> None:
    alice = group.members[0]
    alice.set_history_keep(0)
    data = os.urandom(90_000)
    header, chunks = split_file(data, 40_000, transfer_id=b"H" * 8, sent_at=1, name="h.bin")
    parts = [header.encode(), *(c.encode() for c in chunks)]  # header + 3 chunks
    bob = group.client(1)
    async with bob:
        await bob.send_many(parts[:2])
        said = await bob.send_text("a secret word")
        await bob.wait_accepted(said.counter, WAIT)
    app = group.app(group.client(0))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: "a secret word" in texts(app), poll=pilot.pause)
        assert [t.name for t in app.files.incoming.unfinished()] == ["h.bin"]
    assert [h.counter for h in alice.history()] == [0, 1]  # only the file's parts
    again = group.app(group.client(0))
    async with again.run_test(size=SIZE) as pilot:
        await until(lambda: again.files.ready, poll=pilot.pause)
        assert texts(again) == ["sends a file: h.bin (87.89 KiB)"]  # the text was not kept
        assert [t.name for t in again.files.incoming.unfinished()] == ["h.bin"]
        async with bob:
            await bob.send_many(parts[2:])
            saved = group.home / "downloads" / "h.bin"
            await until(
                lambda: saved.exists() and bool(alice.saved_files().records), poll=pilot.pause
            )
        assert saved.read_bytes() == data
    assert alice.history() == []
    assert list(alice.saved_files().records) == [(1, b"H" * 8)]


async def test_new_since_you_left_is_where_the_app_last_closed(group: Group) -> None:
    bob = group.client(1)
    async with bob:
        entry = await bob.send_text("before")
        await bob.wait_accepted(entry.counter, WAIT)
    first = group.app(group.client(0))
    async with first.run_test(size=SIZE) as pilot:
        await until(lambda: texts(first) == ["before"], poll=pilot.pause)
    async with bob:  # while alice's app is closed
        for text in ("while you were away", "and this"):
            entry = await bob.send_text(text)
        await bob.wait_accepted(entry.counter, WAIT)
    again = group.app(group.client(0))
    async with again.run_test(size=SIZE) as pilot:
        await until(lambda: len(texts(again)) == 3, poll=pilot.pause)
        shown = [
            "NEW" if isinstance(w, NewSinceMarker) else w.line.text
            for w in again.query_one(MessageLog).children
            if isinstance(w, NewSinceMarker | MessageLine)
        ]
        assert shown == ["before", "NEW", "while you were away", "and this"]


async def test_catching_up_puts_older_messages_above_an_own_one_sealed_offline(
    group: Group,
) -> None:
    bob = group.client(1)
    async with bob:
        for text in ("bob one", "bob two"):
            entry = await bob.send_text(text)
        await bob.wait_accepted(entry.counter, WAIT)
    # Written while alice was offline: sealed, in her history, not yet at the relay.
    group.members[0].seal(TextPayload("alice, written offline", 1).encode())
    app = group.app(group.client(0))
    async with app.run_test(size=SIZE) as pilot:
        own = app.query_one(MessageLog).own_lines[0]
        await until(lambda: own.line.state == "stored" and len(texts(app)) == 3, poll=pilot.pause)
        assert texts(app) == ["bob one", "bob two", "alice, written offline"]
    assert [h.seq for h in group.members[0].history()] == [1, 2, 3]
