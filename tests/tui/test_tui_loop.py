"""The chat app's event loop never waits on a commit: with a real member whose commits
are held back on purpose, keys typed meanwhile are handled at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

import pytest
from tui_fakes import FakeClient, FakeMember, FixedClock, header

from ghostline.client import MessageReceived, PadLow
from ghostline.files import split_file
from ghostline.protocol.payload import decode
from ghostline.state.member import Member, Received
from ghostline.tui.app import ChatApp
from ghostline.tui.widgets import ChatInput
from helpers import make_kit_set
from waiting import until

SIZE = (100, 30)


class HeldCommits:
    """Makes every transaction of `member`'s state database wait, once begun, until
    `release()`: a commit as slow as the test wants."""

    def __init__(self, member: Member, monkeypatch: pytest.MonkeyPatch) -> None:
        self.begun = threading.Event()
        self.gate = threading.Event()
        db = member.store.db
        real = db.transaction

        @contextmanager
        def held() -> Iterator[object]:
            with real() as conn:
                self.begun.set()
                assert self.gate.wait(30), "the test never released the commit"
                yield conn

        monkeypatch.setattr(db, "transaction", held)

    def release(self) -> None:
        self.gate.set()


async def test_typing_is_handled_while_saving_a_received_file_waits_on_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kits = make_kit_set(tmp_path / "kits", ["alice", "bob"], slice_len=1 << 16, auth_keys=64)
    head, chunks = split_file(b"d" * 300, 128, transfer_id=b"F" * 8, sent_at=1, name="f.txt")
    parts = [head.encode(), *(c.encode() for c in chunks)]
    with Member.open(kits[1]) as bob:
        entries = bob.seal_many(parts)
    downloads = tmp_path / "downloads"
    with Member.open(kits[0]) as alice:
        for seq, e in enumerate(entries[:-1], start=1):  # all but the last part, stored
            assert alice.receive(seq, e.sealed) is not None
        last = entries[-1]  # arrives live: the file completes, the app saves it
        arrives = Received(len(entries), 1, "bob", last.counter, last.offset, parts[-1])
        app = ChatApp(
            FakeClient(alice),  # type: ignore[arg-type]
            relay="127.0.0.1:7000",
            transport="no TLS · no proxy",
            clock=FixedClock(),
            tz=UTC,
            downloads=lambda: downloads,
            start_client=False,
        )
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.files.ready, poll=pilot.pause)
            commits = HeldCommits(alice, monkeypatch)
            app.handle_event(MessageReceived(arrives, decode(arrives.payload)))
            await until(commits.begun.is_set, what="the commit began", poll=pilot.pause)
            # The record of the saved file is being committed, and waits. The pad figures
            # are asked for meanwhile (their read waits for the commit, in its thread).
            app.handle_event(PadLow(0.05))
            await pilot.press(*"still here")  # keys are handled all the same
            assert app.query_one(ChatInput).text == "still here"
            assert not commits.gate.is_set()
            commits.release()
            await until(lambda: (1, b"F" * 8) in alice.saved_files().records, poll=pilot.pause)
            await until(
                lambda: all(w.is_finished for w in app.workers if w.group == "pads"),
                poll=pilot.pause,
            )
            assert (downloads / "f.txt").read_bytes() == b"d" * 300


class StopFails(FakeClient):
    async def stop(self) -> None:
        raise RuntimeError("the socket was already gone")


async def test_a_connection_that_fails_to_close_is_said_after_the_app_has_gone() -> None:
    member = FakeMember(header())
    app = ChatApp(
        StopFails(member),  # type: ignore[arg-type]
        relay="127.0.0.1:7000",
        transport="no TLS · no proxy",
        clock=FixedClock(),
        tz=UTC,
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.files.ready, poll=pilot.pause)
        await pilot.press("ctrl+q")
    assert member.chat_seen == 0  # "seen" was recorded (in a worker thread) all the same
    assert app.closing_problems == [
        "the connection did not close cleanly: RuntimeError('the socket was already gone')"
    ]
