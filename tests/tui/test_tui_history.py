"""The chat app and the history: where it opens, "new since you left", relay order, and
the history setting in /info. Fake client (see tui_fakes); the same with real members
and a real relay is in test_tui_relay.py."""

from __future__ import annotations

from pathlib import Path

from tui_fakes import T0, FakeClient, FakeMember, FixedClock, header

from ghostline.client import ConnectionChanged, MessageAccepted
from ghostline.protocol.payload import encode_text
from ghostline.tui.app import ChatApp
from ghostline.tui.widgets import MessageLine, MessageLog, NewSinceMarker
from waiting import until

SIZE = (110, 32)


def make_app(member: FakeMember) -> tuple[ChatApp, FakeClient]:
    client = FakeClient(member)
    app = ChatApp(
        client,
        relay="127.0.0.1:7000",
        transport="no TLS · no proxy",
        clock=FixedClock(),
        tz=None,
        downloads=lambda: Path("/nonexistent"),
        random_bytes=lambda k: bytes(k),
    )
    return app, client


def pane(app: ChatApp) -> list[str]:
    """The message pane top to bottom: message texts, and NEW for the marker."""
    out = []
    for widget in app.query_one(MessageLog).children:
        if isinstance(widget, NewSinceMarker):
            out.append("NEW")
        elif isinstance(widget, MessageLine):
            out.append(widget.line.text)
    return out


def laid_out_last(app: ChatApp, start: str) -> bool:
    """Whether the pane's last message starts with `start` and has been laid out."""
    last = list(app.query(MessageLine))[-1]
    return last.line.text.startswith(start) and last.region.height > 0


def at_newest(app: ChatApp) -> bool:
    log = app.query_one(MessageLog)
    last = list(app.query(MessageLine))[-1]
    shown = last.region.height > 0 and last.region.bottom <= log.region.bottom
    return shown and log.scroll_y >= log.max_scroll_y


async def test_reopening_shows_the_newest_message_while_catch_up_arrives() -> None:
    member = FakeMember(header())
    for i in range(80):
        text = "long words " * 30 if i % 3 == 0 else f"line {i}\nsecond\nthird"
        member.add_history(1 + i % 2, text, T0 - 1000 + i)
    app, client = make_app(member)
    async with app.run_test(size=SIZE) as pilot:
        for i in range(30):
            text = f"caught up {i}\nmore\nmore " + "x " * i * 5
            client.events.put_nowait(client.receive(1, encode_text(text, int(T0))))
            # Catch-up messages come spaced out, as over a network: the pane lays out
            # each one before the next arrives (the case that left the app short of the
            # newest message).
            await until(lambda i=i: laid_out_last(app, f"caught up {i}"), what=f"message {i}")
        for _ in range(3):  # let every layout and scroll that is due happen
            await pilot.pause()
        assert at_newest(app)


async def test_scrolling_up_is_not_undone_by_a_new_message() -> None:
    member = FakeMember(header())
    for i in range(80):
        member.add_history(1, f"old {i}", T0 - 1000 + i)
    app, client = make_app(member)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: at_newest(app))
        await pilot.press("pageup")
        log = app.query_one(MessageLog)
        await until(lambda: log.scroll_y < log.max_scroll_y)
        where = log.scroll_y
        client.events.put_nowait(client.receive(2, encode_text("while you read", int(T0))))
        await until(lambda: pane(app)[-1] == "while you read")
        await pilot.pause()
        assert log.scroll_y == where


async def test_new_since_you_left_marks_the_first_message_received_since_the_app_closed() -> None:
    member = FakeMember(header())
    member.add_history(1, "seen before", T0 - 500)
    member.add_history(0, "my answer", T0 - 400, state="stored")
    member.mark_chat_seen()  # the app closed here
    member.add_history(0, "sent from the command line", T0 - 300, state="stored")
    member.add_history(2, "first new", T0 - 200)
    member.add_history(1, "second new", T0 - 100)
    app, _ = make_app(member)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert pane(app) == [
            "seen before",
            "my answer",
            "sent from the command line",  # own messages are never "new"
            "NEW",
            "first new",
            "second new",
        ]
        await pilot.press("ctrl+q")
    assert member.chat_seen == member.entries[-1].history_id  # what "last seen" is now


async def test_no_marker_when_nothing_is_new_or_the_app_never_closed() -> None:
    member = FakeMember(header())
    member.add_history(1, "hello", T0 - 100)
    app, _ = make_app(member)  # never closed before
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert pane(app) == ["hello"]
    again, _ = make_app(member)  # closed since, nothing new
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert pane(again) == ["hello"]


async def test_what_arrives_as_the_app_catches_up_is_marked_new() -> None:
    member = FakeMember(header())
    member.add_history(1, "hello", T0 - 100)
    member.mark_chat_seen()
    app, client = make_app(member)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"mine, not yet stored", "enter")
        client.events.put_nowait(client.receive(2, encode_text("sent while away", int(T0))))
        client.events.put_nowait(client.receive(1, encode_text("and more", int(T0))))
        await until(lambda: len(pane(app)) == 5)
        assert pane(app) == ["hello", "NEW", "sent while away", "and more", "mine, not yet stored"]


async def test_the_marker_far_back_appears_when_its_page_loads() -> None:
    member = FakeMember(header())
    member.add_history(1, "seen", T0 - 5000)
    member.mark_chat_seen()
    for i in range(100):
        member.add_history(1 + i % 2, f"new {i}", T0 - 4000 + i * 10)
    app, _ = make_app(member)
    app.history_page = 40
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "NEW" not in pane(app)
        log = app.query_one(MessageLog)
        for _ in range(3):
            log.scroll_home(animate=False)
            log.want_older()
            await pilot.pause()
        await until(lambda: pane(app)[:3] == ["seen", "NEW", "new 0"], what="the marker")
        assert pane(app).count("NEW") == 1 and len(pane(app)) == 102


async def test_catch_up_shows_older_messages_from_others_above_a_newer_own_one() -> None:
    member = FakeMember(header())
    member.add_history(1, "before", T0 - 600)
    app, client = make_app(member)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"written offline", "enter")  # sealed: no seq yet
        await until(lambda: pane(app) == ["before", "written offline"])
        client.events.put_nowait(ConnectionChanged("connected", "127.0.0.1:7000", None, ""))
        # Catching up: two older messages from others, then the relay stores ours.
        client.events.put_nowait(client.receive(2, encode_text("sent at 9:20", int(T0) - 600)))
        client.events.put_nowait(client.receive(1, encode_text("sent at 9:25", int(T0) - 300)))
        client.events.put_nowait(MessageAccepted(0, client.next_seq()))
        client.events.put_nowait(client.receive(2, encode_text("after yours", int(T0))))
        await until(lambda: len(pane(app)) == 5)
        assert pane(app) == [
            "before",
            "sent at 9:20",
            "sent at 9:25",
            "written offline",
            "after yours",
        ]


async def test_info_says_how_long_history_is_kept() -> None:
    member = FakeMember(header())
    member.history_keep = 30
    app, _ = make_app(member)
    async with app.run_test(size=(130, 40)) as pilot:
        await pilot.press("f2")
        screen = app.screen
        await until(lambda: "kept for 30 days" in _screen_text(app), what="the setting")
        assert screen is not app.screen_stack[0]


def _screen_text(app: ChatApp) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())
