"""The chat app driven by a fake client: what it shows for each event, and what it sends."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from datetime import UTC
from pathlib import Path

import pytest
from textual.containers import VerticalScroll
from tui_fakes import T0, FakeClient, FakeMember, FixedClock, header

from ghostline import files
from ghostline.client import (
    ConnectionChanged,
    MessageAccepted,
    MessageRejected,
    PadExhausted,
    PresenceChanged,
)
from ghostline.files import SEAL_GROUP, publish, safe_file_name, save_new_file, split_file
from ghostline.protocol.payload import (
    FileChunk,
    FileHeader,
    TextPayload,
    decode,
    encode_text,
)
from ghostline.state.member import HistoryEntry, Member
from ghostline.tui.app import ChatApp
from ghostline.tui.files import typed_path
from ghostline.tui.screens import ConfirmScreen
from ghostline.tui.widgets import (
    Banner,
    ChatInput,
    DaySeparator,
    MemberList,
    MessageLine,
    MessageLog,
    PadGauge,
    StatusBar,
    TransferRow,
)
from helpers import make_kit_set
from waiting import until

SIZE = (110, 32)


def make_app(
    member: FakeMember | None = None, tmp_path: Path | None = None, **kwargs: object
) -> tuple[ChatApp, FakeClient]:
    member = member or FakeMember(header())
    client = FakeClient(member)
    downloads = (tmp_path or Path("/nonexistent")) / "downloads"
    app = ChatApp(
        client,
        relay="127.0.0.1:7000",
        transport="no TLS · no proxy",
        clock=FixedClock(),
        tz=UTC,
        downloads=lambda: downloads,
        random_bytes=lambda k: bytes(range(k)),
        **kwargs,  # type: ignore[arg-type]
    )
    return app, client


def texts(app: ChatApp) -> list[str]:
    return [str(line.line.text) for line in app.query(MessageLine)]


async def test_history_is_shown_at_once_with_day_separators() -> None:
    member = FakeMember(header())
    member.add_history(1, "yesterday's news", T0 - 86400)
    member.add_history(0, "my reply", T0 - 86000, state="stored")
    member.add_history(2, "today", T0 - 60)
    app, _ = make_app(member)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert texts(app) == ["yesterday's news", "my reply", "today"]
        assert len(app.query(DaySeparator)) == 2
        own = app.query_one(MessageLog).own_lines[0]
        assert own.line.state == "stored"


async def test_only_the_last_page_of_history_loads_and_older_loads_on_scroll_up() -> None:
    member = FakeMember(header())
    for i in range(100):
        member.add_history(1 + i % 2, f"message {i}", T0 - 6000 + i * 60)
    app, _ = make_app(member, history_page=40)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert texts(app) == [f"message {i}" for i in range(60, 100)]
        log = app.query_one(MessageLog)
        await until(lambda: log.scroll_y > 0, poll=pilot.pause)  # opened at the newest message
        await pilot.press("pageup", "pageup")
        log.scroll_home(animate=False)
        await until(lambda: len(texts(app)) == 80, poll=pilot.pause)
        assert texts(app)[0] == "message 20"
        assert member.history_calls[:2] == [40, 40]  # each page: the one before the oldest
        assert log.scroll_y > 0  # the reader's place is kept, not jumped to the top


async def test_typing_a_message_sends_it_and_marks_its_state() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(ConnectionChanged("connected", "127.0.0.1:7000", None, ""))
        await pilot.pause()
        await pilot.press(*"hello", "enter")
        await until(lambda: len(client.sent) == 1, poll=pilot.pause)
        sent = decode(client.sent[0])
        assert sent == TextPayload("hello", int(T0))
        line = app.query_one(MessageLog).own_lines[0]
        assert line.line.state == "sending"
        client.events.put_nowait(MessageAccepted(0, 17))
        await until(lambda: line.line.state == "stored", poll=pilot.pause)
        assert app.query_one(ChatInput).text == ""


async def test_own_messages_are_sealed_while_disconnected() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(ConnectionChanged("reconnecting", "127.0.0.1:7000", 4.0, "down"))
        await pilot.pause()
        await pilot.press(*"later", "enter")
        await until(lambda: 0 in app.query_one(MessageLog).own_lines, poll=pilot.pause)
        assert app.query_one(MessageLog).own_lines[0].line.state == "sealed"
        status = app.query_one(StatusBar)
        assert status.state == "reconnecting"
        assert "next try in 4s" in str(status.render())


async def test_shift_enter_and_ctrl_j_make_new_lines_and_up_recalls() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"one", "ctrl+j", *"two", "shift+enter", *"three", "enter")
        await until(lambda: len(client.sent) == 1, poll=pilot.pause)
        assert decode(client.sent[0]) == TextPayload("one\ntwo\nthree", int(T0))
        await pilot.press(*"second", "enter")
        await until(lambda: len(client.sent) == 2, poll=pilot.pause)
        chat_input = app.query_one(ChatInput)
        await pilot.press("up")
        assert chat_input.text == "second"
        await pilot.press("up")
        assert chat_input.text == "one\ntwo\nthree"
        await pilot.press("up", "up")  # inside a multi-line message up moves the cursor
        assert chat_input.text == "one\ntwo\nthree"
        await pilot.press("down", "down", "down")  # to the last line, then forward
        assert chat_input.text == "second"
        await pilot.press("down")
        assert chat_input.text == ""


async def test_received_message_and_rejected_message_are_shown() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(client.receive(1, encode_text("hi alice", int(T0))))
        client.events.put_nowait(MessageRejected(8, "bad_tag", "the tag for you does not verify"))
        await until(lambda: len(texts(app)) == 2, poll=pilot.pause)
        lines = list(app.query(MessageLine))
        assert lines[0].line.sender_name == "bob"
        assert lines[1].line.kind == "warning"
        assert "bad_tag" in lines[1].line.text and "does not verify" in lines[1].line.text


async def test_presence_change_shows_in_member_list() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        members = app.query_one(MemberList)
        assert "not authenticated" in str(members.tooltip)
        client.events.put_nowait(PresenceChanged(frozenset({0, 2}), frozenset({0, 2})))
        await until(lambda: any(r.online for r in members.rows if r.index == 2), poll=pilot.pause)
        assert "carol came online" in texts(app)
        client.events.put_nowait(PresenceChanged(frozenset({0}), left=frozenset({2})))
        await until(
            lambda: not any(r.online for r in members.rows if r.index == 2), poll=pilot.pause
        )
        assert "carol went offline" in texts(app)


async def test_pad_gauge_moves_by_the_message_size() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        gauge = app.query_one(PadGauge)
        before = gauge.pad
        assert before is not None
        await pilot.press(*"twelve bytes", "enter")
        await until(lambda: gauge.pad != before, poll=pilot.pause)
        assert gauge.pad is not None
        assert before.bytes_left - gauge.pad.bytes_left == len(client.sent[0]) == 5 + 12
        assert before.msgs_left - gauge.pad.msgs_left == 1
        # Others' slices move when their messages arrive.
        bob_before = app.pads[1]
        client.events.put_nowait(client.receive(1, encode_text("abc", int(T0))))
        await until(lambda: app.pads[1] != bob_before, poll=pilot.pause)
        assert bob_before.bytes_left - app.pads[1].bytes_left == 8
        assert bob_before.msgs_left - app.pads[1].msgs_left == 1


async def test_pad_warnings_at_ten_and_one_percent() -> None:
    member = FakeMember(header(auth_keys=1000))
    member.used[0] = (899, 100)
    app, client = make_app(member)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one(Banner)
        assert not banner.has_class("-shown")
        await pilot.press(*"x", "enter")  # 100 keys left: 10%
        await until(lambda: banner.has_class("-low"), poll=pilot.pause)
        assert "running low" in str(banner.render())
        member.used[0] = (990, 200)
        client.events.put_nowait(PadExhausted())  # the app re-reads usage on pad events
        await until(lambda: banner.has_class("-critical"), poll=pilot.pause)
        assert "almost used up" in str(banner.render())
        assert not app.query_one(ChatInput).disabled


async def test_exhaustion_disables_input_with_an_explanation() -> None:
    member = FakeMember(header(auth_keys=3))
    member.used[0] = (2, 10)
    app, client = make_app(member)
    async with app.run_test(size=SIZE) as pilot:
        chat_input = app.query_one(ChatInput)
        assert not chat_input.disabled
        await pilot.press(*"last one", "enter")
        await until(lambda: chat_input.disabled, poll=pilot.pause)
        banner = str(app.query_one(Banner).render())
        assert "used up" in banner and "ghostline pad new" in banner
        await pilot.press(*"more", "enter")
        assert len(client.sent) == 1


async def test_file_command_asks_then_sends_with_progress(tmp_path: Path) -> None:
    source = tmp_path / "notes.bin"
    source.write_bytes(bytes(range(256)) * 600)  # 153,600 bytes: 3 chunks of 64 KiB
    app, client = make_app(tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one(ChatInput).load_text(f"/file {source}")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ConfirmScreen), poll=pilot.pause)
        question = str(app.screen.query_one("#question").render())
        assert "notes.bin" in question and "4 messages" in question
        await pilot.press("y")
        await until(lambda: len(client.sent) == 4, poll=pilot.pause)
        for counter in range(4):
            client.events.put_nowait(MessageAccepted(counter, 100 + counter))
        key = "out-" + bytes(range(8)).hex()
        await until(lambda: (key, 4, 4) in app.transfer_log, poll=pilot.pause)
        assert [done for k, done, _ in app.transfer_log if k == key] == [0, 1, 2, 3, 4]
        row = app.query_one(f"#{key}", TransferRow)
        assert row.has_class("-done")
        assert client.groups == [4]  # header and 3 chunks: one commit


async def test_a_large_file_is_sealed_in_groups_not_one_message_at_a_time(
    tmp_path: Path,
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 256 * 40)  # 40 chunks of 64 KiB
    app, client = make_app(FakeMember(header(slice_len=8 << 20)), tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.offer_file(str(source))
        await until(lambda: isinstance(app.screen, ConfirmScreen), poll=pilot.pause)
        await pilot.press("y")
        await until(lambda: len(client.sent) == 41, poll=pilot.pause)
        assert client.groups == [SEAL_GROUP, 41 - SEAL_GROUP]
        assert 16 <= SEAL_GROUP <= 64
        sealed = [decode(p) for p in client.sent]
        assert isinstance(sealed[0], FileHeader)
        assert [c.index for c in sealed[1:] if isinstance(c, FileChunk)] == list(range(40))
        await until(lambda: any("sent a file: big.bin" in t for t in texts(app)), poll=pilot.pause)


async def test_file_command_can_be_cancelled(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"abc")
    app, client = make_app(tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one(ChatInput).load_text(f"/file {source}")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ConfirmScreen), poll=pilot.pause)
        await pilot.press("n")
        await until(lambda: "did not send a.txt" in texts(app), poll=pilot.pause)
        assert client.sent == []


async def test_received_file_is_saved_once_complete_never_overwriting(tmp_path: Path) -> None:
    data = bytes(range(256)) * 700
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "photo.jpg").write_bytes(b"already here")
    head, chunks = split_file(data, 65536, transfer_id=b"T" * 8, sent_at=int(T0), name="photo.jpg")
    parts = [head.encode(), *(c.encode() for c in chunks)]
    app, client = make_app(tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        for payload in reversed(parts):  # any order
            client.events.put_nowait(client.receive(2, payload))
        key = f"in-2-{(b'T' * 8).hex()}"
        await until(
            lambda: any(k == key and d == len(data) for k, d, _ in app.transfer_log),
            poll=pilot.pause,
        )
        saved = tmp_path / "downloads" / "photo (1).jpg"
        await until(lambda: saved.exists(), poll=pilot.pause)
        assert saved.read_bytes() == data
        assert (tmp_path / "downloads" / "photo.jpg").read_bytes() == b"already here"
        # the save runs in a worker thread: its temporary file goes right after the link
        await until(
            lambda: not any(p.name.startswith(".") for p in saved.parent.iterdir()),
            poll=pilot.pause,
        )


async def test_corrupted_file_is_reported_and_not_saved(tmp_path: Path) -> None:
    head, chunks = split_file(b"x" * 100, 64, transfer_id=b"U" * 8, sent_at=int(T0), name="a.txt")
    chunk_list = list(chunks)
    bad = chunk_list[1].encode()[:-1] + b"y"
    app, client = make_app(tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        for payload in (head.encode(), chunk_list[0].encode(), bad):
            client.events.put_nowait(client.receive(1, payload))
        await until(lambda: any("SHA-256" in t for t in texts(app)), poll=pilot.pause)
        assert not (tmp_path / "downloads" / "a.txt").exists()


async def test_interrupted_transfer_in_history_resumes_when_the_rest_arrives(
    tmp_path: Path,
) -> None:
    data = b"z" * 200
    head, chunks = split_file(data, 64, transfer_id=b"V" * 8, sent_at=int(T0), name="r.txt")
    parts = [head.encode(), *(c.encode() for c in chunks)]
    member = FakeMember(header())
    for i, payload in enumerate(parts[:2]):
        member.entries.append(HistoryEntry(1, "bob", i, i + 1, payload, T0 - 100, "received"))
    member.used[1] = (2, sum(len(p) for p in parts[:2]))
    app, client = make_app(member, tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.files_ready, poll=pilot.pause)
        row = app.query_one(f"#in-1-{(b'V' * 8).hex()}", TransferRow)
        assert "interrupted" in str(row.query_one("Label").render())
        for payload in parts[2:]:
            client.events.put_nowait(client.receive(1, payload))
        saved = tmp_path / "downloads" / "r.txt"
        await until(lambda: saved.exists(), poll=pilot.pause)
        assert saved.read_bytes() == data


def file_parts(data: bytes, tid: bytes, name: str, chunk: int = 64) -> list[bytes]:
    head, chunks = split_file(data, chunk, transfer_id=tid, sent_at=int(T0), name=name)
    return [head.encode(), *(c.encode() for c in chunks)]


def add_parts(member: FakeMember, sender: int, parts: list[bytes], state: str) -> None:
    for payload in parts:
        member.add_entry(sender, payload, T0 - 100, state)


async def test_an_interrupted_incoming_file_far_back_in_history_still_resumes(
    tmp_path: Path,
) -> None:
    data = bytes(range(200))
    parts = file_parts(data, b"W" * 8, "old.txt")  # header + 4 chunks
    member = FakeMember(header())
    add_parts(member, 2, parts[:3], "received")
    for i in range(30):  # the transfer is far outside the first page of history
        member.add_history(1, f"chatter {i}", T0 - 50 + i)
    app, client = make_app(member, tmp_path=tmp_path, history_page=10)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.files_ready, poll=pilot.pause)
        row = app.query_one(f"#in-2-{(b'W' * 8).hex()}", TransferRow)
        assert "interrupted" in str(row.query_one("Label").render())
        for payload in parts[3:]:
            client.events.put_nowait(client.receive(2, payload))
        saved = tmp_path / "downloads" / "old.txt"
        await until(lambda: saved.exists(), poll=pilot.pause)
        assert saved.read_bytes() == data


async def test_a_finished_file_in_history_is_not_saved_again_on_reopen(tmp_path: Path) -> None:
    member = FakeMember(header())
    add_parts(member, 1, file_parts(b"q" * 300, b"D" * 8, "done.txt"), "received")
    # an earlier, unfinished send of the same file that later went through whole
    add_parts(member, 2, file_parts(b"r" * 300, b"E" * 8, "again.txt")[:2], "received")
    add_parts(member, 2, file_parts(b"r" * 300, b"F" * 8, "again.txt"), "received")
    # both finished files were saved (and recorded) when they arrived
    member.saved[(1, b"D" * 8)] = Path("/elsewhere/done.txt")
    member.saved[(2, b"F" * 8)] = Path("/elsewhere/again.txt")
    app, _ = make_app(member, tmp_path=tmp_path, history_page=3)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.files_ready, poll=pilot.pause)  # saves are started before this
        await until(
            lambda: all(w.is_finished for w in app.workers if w.group == "save"), poll=pilot.pause
        )
        assert not (tmp_path / "downloads").exists()
        assert len(app.query(TransferRow)) == 0
        assert app.incoming.unfinished() == []
        assert member.record_calls == []


async def open_and_settle(app: ChatApp) -> None:
    """Run `app` until its history scan and every save it started are done."""
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.files_ready, poll=pilot.pause)  # saves are started before this
        await until(
            lambda: all(w.is_finished for w in app.workers if w.group == "save"), poll=pilot.pause
        )


async def test_a_finished_file_never_saved_is_saved_on_reopen_once(tmp_path: Path) -> None:
    """The app stopped after the last part was recorded but before the file was saved:
    opening saves it, records that, and the next opening does not save it again."""
    data = os.urandom(300)
    member = FakeMember(header())
    add_parts(member, 1, file_parts(data, b"K" * 8, "late.txt"), "received")
    add_parts(member, 2, file_parts(b"o" * 100, b"L" * 8, "own.txt"), "received")
    member.saved[(2, b"L" * 8)] = Path("/elsewhere/own.txt")
    downloads = tmp_path / "downloads"
    for _ in range(2):
        await open_and_settle(make_app(member, tmp_path=tmp_path)[0])
        assert (1, b"K" * 8) in member.saved
        assert sorted(p.name for p in downloads.iterdir()) == ["late.txt"]
        assert (downloads / "late.txt").read_bytes() == data
    sha = hashlib.sha256(data).digest()
    assert member.record_calls == [(1, b"K" * 8, downloads / "late.txt", sha)]


async def test_saving_on_reopen_never_overwrites(tmp_path: Path) -> None:
    member = FakeMember(header())
    add_parts(member, 1, file_parts(b"new" * 50, b"M" * 8, "a.txt"), "received")
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "a.txt").write_bytes(b"mine")
    app, _ = make_app(member, tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: any("saved a.txt from bob" in t for t in texts(app)), poll=pilot.pause)
        row = app.query_one(f"#in-1-{(b'M' * 8).hex()}", TransferRow)
        assert "saved as a (1).txt" in str(row.query_one("Label").render())
    assert (tmp_path / "downloads" / "a.txt").read_bytes() == b"mine"
    assert (tmp_path / "downloads" / "a (1).txt").read_bytes() == b"new" * 50
    assert member.saved == {(1, b"M" * 8): tmp_path / "downloads" / "a (1).txt"}


async def test_a_file_received_by_a_real_member_but_not_saved_is_saved_on_reopen(
    tmp_path: Path,
) -> None:
    """The real state database: bob's file is received (committed) by alice's member,
    the app was never there to save it; the app saves it on opening, exactly once."""
    kits = make_kit_set(tmp_path / "kits", ["alice", "bob"], slice_len=1 << 16, auth_keys=64)
    data = os.urandom(5000)
    parts = file_parts(data, b"R" * 8, "report.pdf", chunk=1024)
    with Member.open(kits[1]) as bob, Member.open(kits[0]) as alice:
        for seq, entry in enumerate(bob.seal_many(parts), start=1):
            assert alice.receive(seq, entry.sealed) is not None
    downloads = tmp_path / "downloads"
    for _ in range(2):
        with Member.open(kits[0]) as alice:
            app = ChatApp(
                FakeClient(alice),  # type: ignore[arg-type]
                relay="127.0.0.1:7000",
                transport="no TLS · no proxy",
                downloads=lambda: downloads,
                start_client=False,
            )
            await open_and_settle(app)
            assert (1, b"R" * 8) in alice.saved_files().records
        assert [p.name for p in downloads.iterdir()] == ["report.pdf"]
        assert (downloads / "report.pdf").read_bytes() == data
    with Member.open(kits[0]) as alice:
        [row] = alice.store.saved_files()
    assert (row.sender, row.transfer_id, row.path) == (1, b"R" * 8, str(downloads / "report.pdf"))
    assert row.sha256 == hashlib.sha256(data).digest()


async def test_an_own_file_cut_short_by_quitting_is_reported_on_reopen(tmp_path: Path) -> None:
    parts = file_parts(b"s" * 640, b"S" * 8, "draft.pdf")  # header + 10 chunks
    member = FakeMember(header())
    add_parts(member, 0, parts[:4], "stored")  # header and 3 chunks sealed, then quit
    member.add_history(1, "did you get it?", T0 - 10)
    app, _ = make_app(member, tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.files_ready, poll=pilot.pause)
        lines = texts(app)
        warning = (
            "file draft.pdf: sent 3 of 10 parts before the app closed; send it again with /file"
        )
        assert lines[-1] == warning
        assert [line for line in app.query(MessageLine) if line.line.kind == "warning"]
        assert not any(t.startswith("sent a file") for t in lines)
        assert "did not finish sending a file: draft.pdf (640 B), 3 of 10 parts" in lines
        [line] = [m for m in app.query(MessageLine) if "did not finish" in m.line.text]
        assert line.line.state is None  # no "stored ✓": only the header was stored


async def test_a_file_sent_again_in_full_closes_the_interrupted_row(tmp_path: Path) -> None:
    data = b"v" * 300
    member = FakeMember(header())
    add_parts(member, 1, file_parts(data, b"G" * 8, "v.txt")[:2], "received")
    app, client = make_app(member, tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.files_ready, poll=pilot.pause)
        old = app.query_one(f"#in-1-{(b'G' * 8).hex()}", TransferRow)
        assert not old.has_class("-done")
        for payload in file_parts(data, b"H" * 8, "v.txt"):
            client.events.put_nowait(client.receive(1, payload))
        await until(lambda: old.has_class("-done"), poll=pilot.pause)
        assert "sent again in full" in str(old.query_one("Label").render())
        assert app.incoming.unfinished() == []
        assert [p.name for p in (tmp_path / "downloads").iterdir()] == ["v.txt"]


async def test_an_own_file_cut_short_is_reported_even_beyond_the_first_page(
    tmp_path: Path,
) -> None:
    member = FakeMember(header())
    add_parts(member, 0, file_parts(b"t" * 640, b"T" * 8, "a.bin")[:2], "sealed")
    add_parts(member, 0, file_parts(b"u" * 100, b"U" * 8, "whole.bin"), "stored")
    add_parts(member, 0, file_parts(b"w" * 640, b"V" * 8, "w.bin")[:3], "stored")
    add_parts(member, 0, file_parts(b"w" * 640, b"Y" * 8, "w.bin"), "stored")  # again, whole
    for i in range(20):
        member.add_history(1, f"chatter {i}", T0 - 50 + i)
    app, _ = make_app(member, tmp_path=tmp_path, history_page=5)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.files_ready, poll=pilot.pause)
        warnings = [t for t in texts(app) if t.startswith("file ")]
        assert warnings == [
            "file a.bin: sent 1 of 10 parts before the app closed; send it again with /file"
        ]
        sends = app.unfinished_sends.values()
        again = [s for s in sends if safe_file_name(s.header.name) == "w.bin"]
        assert [s.sent_again for s in again] == [True]
        assert app._own_file_text(again[0].header) == (
            "did not finish sending a file: w.bin (640 B), 2 of 10 parts; sent again in full later"
        )


async def test_a_received_file_is_saved_off_the_ui_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(70_000)
    threads: list[threading.Thread] = []
    real_save = publish.save_new_file

    def recording_save(directory: Path, name: str, payload: bytes) -> Path:
        threads.append(threading.current_thread())
        return real_save(directory, name, payload)

    monkeypatch.setattr(publish, "save_new_file", recording_save)
    app, client = make_app(tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        for payload in file_parts(data, b"X" * 8, "x.bin", chunk=65536):
            client.events.put_nowait(client.receive(1, payload))
        saved = tmp_path / "downloads" / "x.bin"
        await until(lambda: any("saved x.bin" in t for t in texts(app)), poll=pilot.pause)
        assert saved.read_bytes() == data
        assert threads and threads[0] is not threading.main_thread()
        row = app.query_one(f"#in-1-{(b'X' * 8).hex()}", TransferRow)
        assert row.has_class("-done")
        assert "saved as x.bin" in str(row.query_one("Label").render())  # fits the panel


async def test_the_status_bar_says_when_only_presence_is_down() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        status = app.query_one(StatusBar)
        members = app.query_one(MemberList)
        client.events.put_nowait(ConnectionChanged("connected", "127.0.0.1:7000", None, ""))
        client.events.put_nowait(PresenceChanged(frozenset({0, 1}), frozenset({1})))
        await until(lambda: "bob came online" in texts(app), poll=pilot.pause)
        client.events.put_nowait(
            ConnectionChanged(
                "connected", "127.0.0.1:7001", 1.5, "presence unavailable: refused", "presence"
            )
        )
        client.events.put_nowait(PresenceChanged(frozenset(), left=frozenset({0, 1})))
        await until(lambda: "presence down" in str(status.render()), poll=pilot.pause)
        await until(lambda: app.online == frozenset(), poll=pilot.pause)  # the list was read
        rendered = str(status.render())
        assert "● connected" in rendered and "127.0.0.1:7000" in rendered
        assert "bob went offline" not in texts(app)  # not known: presence is down
        assert "? bob" in str(members.render())
        client.events.put_nowait(
            ConnectionChanged("connected", "127.0.0.1:7001", None, "presence connected", "presence")
        )
        client.events.put_nowait(PresenceChanged(frozenset({0, 1}), frozenset({0, 1})))
        await until(lambda: "presence down" not in str(status.render()), poll=pilot.pause)
        await until(lambda: any(r.online for r in members.rows if r.index == 1), poll=pilot.pause)
        assert texts(app).count("bob came online") == 1  # a resync is not an arrival
        client.events.put_nowait(PresenceChanged(frozenset({0}), left=frozenset({1})))
        await until(lambda: "bob went offline" in texts(app), poll=pilot.pause)


async def test_pagedown_in_the_help_scrolls_the_help_not_the_messages() -> None:
    member = FakeMember(header())
    for i in range(80):
        member.add_history(1, f"message {i}", T0 - 6000 + i * 60)
    app, _ = make_app(member)
    async with app.run_test(size=SIZE) as pilot:
        log = app.query_one(MessageLog)
        await until(lambda: log.scroll_y > 0, poll=pilot.pause)
        at = log.scroll_y
        await pilot.press("f1")
        await until(lambda: app.screen.__class__.__name__ == "TextScreen", poll=pilot.pause)
        help_scroll = app.screen.query_one(VerticalScroll)
        await pilot.press("pagedown")
        await until(lambda: help_scroll.scroll_y > 0, poll=pilot.pause)
        assert log.scroll_y == at
        await pilot.press("escape")
        await pilot.press("pageup")
        await until(lambda: log.scroll_y < at, poll=pilot.pause)


async def test_commands_help_info_and_quit() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"/help", "enter")
        await until(lambda: app.screen.__class__.__name__ == "TextScreen", poll=pilot.pause)
        await pilot.press("escape")
        await pilot.press(*"/info", "enter")
        await until(lambda: app.screen.__class__.__name__ == "TextScreen", poll=pilot.pause)
        await pilot.press("escape")
        await pilot.press(*"/nope", "enter")
        await until(lambda: any("unknown command /nope" in t for t in texts(app)), poll=pilot.pause)
        await pilot.press(*"/quit", "enter")
        await until(lambda: client.stopped, poll=pilot.pause)
    assert client.sent == []


def test_save_new_file_picks_a_free_name(tmp_path: Path) -> None:
    first = save_new_file(tmp_path, "report.pdf", b"1")
    second = save_new_file(tmp_path, "report.pdf", b"2")
    third = save_new_file(tmp_path, "../../etc/report.pdf", b"3")
    assert [first.name, second.name, third.name] == [
        "report.pdf",
        "report (1).pdf",
        "report (2).pdf",
    ]
    assert [p.read_bytes() for p in (first, second, third)] == [b"1", b"2", b"3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "report (1).pdf",
        "report (2).pdf",
        "report.pdf",
    ]


def test_a_dropped_or_quoted_path_is_read_as_the_file_it_names(tmp_path: Path) -> None:
    target = tmp_path / "my notes.txt"
    target.write_text("x")
    assert typed_path(str(target)) == target
    assert typed_path(f"'{target}'") == target
    assert typed_path(f'"{target}"') == target
    assert typed_path(str(target).replace(" ", "\\ ")) == target


def test_files_finished_before_an_upgrade_are_not_saved_again(tmp_path: Path) -> None:
    """A database from before saved files were recorded (schema 1): its finished files
    were saved on arrival, so after the upgrade only later ones can be unsaved."""
    kits = make_kit_set(tmp_path / "kits", ["alice", "bob"], slice_len=1 << 16, auth_keys=64)
    with Member.open(kits[1]) as bob, Member.open(kits[0]) as alice:
        old = bob.seal_many(file_parts(b"o" * 300, b"O" * 8, "old.txt"))
        cut = bob.seal_many(file_parts(b"c" * 300, b"C" * 8, "cut.txt"))  # 2 parts before
        for seq, entry in enumerate(old + cut[:2], start=1):
            alice.receive(seq, entry.sealed)
        state = alice.state_path
    conn = sqlite3.connect(state)  # back to schema 1: no record of saved files
    conn.executescript(
        "DROP TABLE saved_file; DROP TABLE saves_tracked; DROP TABLE history_keep; "
        "DROP TABLE chat_seen; DROP INDEX history_recorded; DROP INDEX history_relay_order; "
        "DROP TABLE relay_epoch; ALTER TABLE history DROP COLUMN relay_epoch; "
        "UPDATE schema_version SET version = 1;"
    )
    conn.close()
    with Member.open(kits[0]) as alice:  # migrated
        found = files.scan_file_history(alice, 0)
        assert found.complete == {(1, b"O" * 8)}
        assert found.unsaved == frozenset()
        for seq, entry in enumerate(cut[2:], start=10):  # the rest after the upgrade
            alice.receive(seq, entry.sealed)
        found = files.scan_file_history(alice, 0)
        assert found.unsaved == {(1, b"C" * 8)}
        assert len(found.incoming) == len(cut)
