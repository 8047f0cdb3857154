"""The chat app driven by a fake client: what it shows for each event, and what it sends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

from textual.pilot import Pilot
from tui_fakes import T0, FakeClient, FakeMember, FixedClock, header

from ghostline.client import (
    ConnectionChanged,
    MessageAccepted,
    MessageRejected,
    PadExhausted,
    PresenceChanged,
)
from ghostline.payload import TextPayload, decode, encode_text, split_file
from ghostline.tui.app import ChatApp
from ghostline.tui.files import save_new_file
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


async def until(pilot: Pilot[None], check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await pilot.pause(0.02)


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
        await until(pilot, lambda: log.scroll_y > 0)  # opened at the newest message
        await pilot.press("pageup", "pageup")
        log.scroll_home(animate=False)
        await until(pilot, lambda: len(texts(app)) == 80)
        assert texts(app)[0] == "message 20"
        assert member.history_calls[:2] == [40, 80]
        assert log.scroll_y > 0  # the reader's place is kept, not jumped to the top


async def test_typing_a_message_sends_it_and_marks_its_state() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(ConnectionChanged("connected", "127.0.0.1:7000", None, ""))
        await pilot.pause()
        await pilot.press(*"hello", "enter")
        await until(pilot, lambda: len(client.sent) == 1)
        sent = decode(client.sent[0])
        assert sent == TextPayload("hello", int(T0))
        line = app.query_one(MessageLog).own_lines[0]
        assert line.line.state == "sending"
        client.events.put_nowait(MessageAccepted(0, 17))
        await until(pilot, lambda: line.line.state == "stored")
        assert app.query_one(ChatInput).text == ""


async def test_own_messages_are_sealed_while_disconnected() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(ConnectionChanged("reconnecting", "127.0.0.1:7000", 4.0, "down"))
        await pilot.pause()
        await pilot.press(*"later", "enter")
        await until(pilot, lambda: 0 in app.query_one(MessageLog).own_lines)
        assert app.query_one(MessageLog).own_lines[0].line.state == "sealed"
        status = app.query_one(StatusBar)
        assert status.state == "reconnecting"
        assert "next try in 4s" in str(status.render())


async def test_shift_enter_and_ctrl_j_make_new_lines_and_up_recalls() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"one", "ctrl+j", *"two", "shift+enter", *"three", "enter")
        await until(pilot, lambda: len(client.sent) == 1)
        assert decode(client.sent[0]) == TextPayload("one\ntwo\nthree", int(T0))
        await pilot.press(*"second", "enter")
        await until(pilot, lambda: len(client.sent) == 2)
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
        await until(pilot, lambda: len(texts(app)) == 2)
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
        await until(pilot, lambda: any(r.online for r in members.rows if r.index == 2))
        assert "carol came online" in texts(app)
        client.events.put_nowait(PresenceChanged(frozenset({0}), left=frozenset({2})))
        await until(pilot, lambda: not any(r.online for r in members.rows if r.index == 2))
        assert "carol went offline" in texts(app)


async def test_pad_gauge_moves_by_the_message_size() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        gauge = app.query_one(PadGauge)
        before = gauge.pad
        assert before is not None
        await pilot.press(*"twelve bytes", "enter")
        await until(pilot, lambda: gauge.pad != before)
        assert gauge.pad is not None
        assert before.bytes_left - gauge.pad.bytes_left == len(client.sent[0]) == 5 + 12
        assert before.msgs_left - gauge.pad.msgs_left == 1
        # Others' slices move when their messages arrive.
        bob_before = app.pads[1]
        client.events.put_nowait(client.receive(1, encode_text("abc", int(T0))))
        await until(pilot, lambda: app.pads[1] != bob_before)
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
        await until(pilot, lambda: banner.has_class("-low"))
        assert "running low" in str(banner.render())
        member.used[0] = (990, 200)
        client.events.put_nowait(PadExhausted())  # the app re-reads usage on pad events
        await until(pilot, lambda: banner.has_class("-critical"))
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
        await until(pilot, lambda: chat_input.disabled)
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
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        question = str(app.screen.query_one("#question").render())
        assert "notes.bin" in question and "4 messages" in question
        await pilot.press("y")
        await until(pilot, lambda: len(client.sent) == 4)
        for counter in range(4):
            client.events.put_nowait(MessageAccepted(counter, 100 + counter))
        key = "out-" + bytes(range(8)).hex()
        await until(pilot, lambda: (key, 4, 4) in app.transfer_log)
        assert [done for k, done, _ in app.transfer_log if k == key] == [0, 1, 2, 3, 4]
        row = app.query_one(f"#{key}", TransferRow)
        assert row.has_class("-done")


async def test_file_command_can_be_cancelled(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"abc")
    app, client = make_app(tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one(ChatInput).load_text(f"/file {source}")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await until(pilot, lambda: "did not send a.txt" in texts(app))
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
        await until(pilot, lambda: any(k == key and d == len(data) for k, d, _ in app.transfer_log))
        saved = tmp_path / "downloads" / "photo (1).jpg"
        await until(pilot, lambda: saved.exists())
        assert saved.read_bytes() == data
        assert (tmp_path / "downloads" / "photo.jpg").read_bytes() == b"already here"
        assert [p.name for p in (tmp_path / "downloads").iterdir() if p.name.startswith(".")] == []


async def test_corrupted_file_is_reported_and_not_saved(tmp_path: Path) -> None:
    head, chunks = split_file(b"x" * 100, 64, transfer_id=b"U" * 8, sent_at=int(T0), name="a.txt")
    chunk_list = list(chunks)
    bad = chunk_list[1].encode()[:-1] + b"y"
    app, client = make_app(tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        for payload in (head.encode(), chunk_list[0].encode(), bad):
            client.events.put_nowait(client.receive(1, payload))
        await until(pilot, lambda: any("SHA-256" in t for t in texts(app)))
        assert not (tmp_path / "downloads" / "a.txt").exists()


async def test_interrupted_transfer_in_history_resumes_when_the_rest_arrives(
    tmp_path: Path,
) -> None:
    data = b"z" * 200
    head, chunks = split_file(data, 64, transfer_id=b"V" * 8, sent_at=int(T0), name="r.txt")
    parts = [head.encode(), *(c.encode() for c in chunks)]
    member = FakeMember(header())
    from ghostline.member import HistoryEntry

    for i, payload in enumerate(parts[:2]):
        member.entries.append(HistoryEntry(1, "bob", i, i + 1, payload, T0 - 100, "received"))
    member.used[1] = (2, sum(len(p) for p in parts[:2]))
    app, client = make_app(member, tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        row = app.query_one(f"#in-1-{(b'V' * 8).hex()}", TransferRow)
        assert "interrupted" in str(row.query_one("Label").render())
        for payload in parts[2:]:
            client.events.put_nowait(client.receive(1, payload))
        saved = tmp_path / "downloads" / "r.txt"
        await until(pilot, lambda: saved.exists())
        assert saved.read_bytes() == data


async def test_commands_help_info_and_quit() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"/help", "enter")
        await until(pilot, lambda: app.screen.__class__.__name__ == "TextScreen")
        await pilot.press("escape")
        await pilot.press(*"/info", "enter")
        await until(pilot, lambda: app.screen.__class__.__name__ == "TextScreen")
        await pilot.press("escape")
        await pilot.press(*"/nope", "enter")
        await until(pilot, lambda: any("unknown command /nope" in t for t in texts(app)))
        await pilot.press(*"/quit", "enter")
        await until(pilot, lambda: client.stopped)
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
