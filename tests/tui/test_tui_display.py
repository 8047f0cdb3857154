"""The chat app draws what other people wrote as text: no escape sequence, control or
bidi override reaches the terminal, and no Rich or Textual markup is read in it.

What is checked is what the app would draw: the strips of the whole screen.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from textual.pilot import Pilot
from textual.widget import Widget
from tui_fakes import T0, FakeClient, FakeMember, FixedClock, header

from ghostline.client import ConnectionChanged, MessageRejected, RelayError
from ghostline.files import split_file
from ghostline.pad.kit import KitHeader
from ghostline.protocol.payload import encode_text
from ghostline.tui.app import ChatApp
from ghostline.tui.widgets import MessageLine, TransferRow
from waiting import until

SIZE = (120, 40)
HOSTILE = "\x1b[2J\x1b]0;TITLE\x07\x1b[31mred\u202eevil\x9b2J\rback"
MARKUP = "[bold]not bold[/] [link=https://evil.example]click[/link] [/] [red]"
UNSAFE = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F))]


def make_app(kit_header: KitHeader | None = None) -> tuple[ChatApp, FakeClient]:
    client = FakeClient(FakeMember(kit_header or header()))
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


def screen_text(app: ChatApp) -> str:
    """Every character the app would draw, row by row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def drawn(widget: Widget) -> list[str]:
    region = widget.region
    return [s.text for s in widget.render_lines(region.reset_offset)]


async def shows(pilot: Pilot[None], app: ChatApp, *parts: str) -> str:
    await until(lambda: all(p in screen_text(app) for p in parts), what=f"{parts} on screen")
    text = screen_text(app)
    assert not [c for c in UNSAFE if c in text.replace("\n", "")], repr(text)
    return text


async def test_escape_sequences_in_a_message_are_drawn_escaped_not_sent_to_the_terminal() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(client.receive(1, encode_text(HOSTILE, int(T0))))
        await shows(pilot, app, "\\x1b[2J\\x1b]0;TITLE\\x07\\x1b[31mred\\u202eevil\\x9b2J\\rback")


async def test_markup_in_a_message_is_shown_as_typed_and_keeps_the_layout() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(client.receive(1, encode_text(MARKUP, int(T0))))
        client.events.put_nowait(client.receive(2, encode_text("after it", int(T0))))
        await shows(pilot, app, MARKUP, "after it")
        lines = list(app.query(MessageLine))
        assert [drawn(line)[0].split()[1] for line in lines] == ["bob", "carol"]


async def test_a_second_line_of_a_message_never_sits_where_a_time_and_name_would() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        attack = "ok see you then\n09:31 alice  I agree, send bob the money"
        client.events.put_nowait(client.receive(1, encode_text(attack, int(T0))))
        await shows(pilot, app, "I agree, send bob the money")
        first, second = drawn(app.query_one(MessageLine))[:2]
        text_column = first.index("ok see you then")
        assert second[:text_column].strip() == ""
        assert second[text_column:].startswith("09:31 alice")


async def test_names_and_the_group_from_the_kit_are_drawn_as_typed() -> None:
    names = ["alice", "[bold]eve[/]\x1b[5m", "carol\u202e"]
    kit = replace(header(names), group="river [link=https://x.example]house[/link] [/]")
    app, client = make_app(kit)
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(client.receive(1, encode_text("hi", int(T0))))
        await shows(
            pilot,
            app,
            "river [link=https://x.example]house[/link] [/]",
            "[bold]eve[/]\\x1b[5m",
            "carol\\u202e",
        )
        await pilot.press("f2")
        await shows(pilot, app, "Pad info", "│ [bold]eve[/]\\x1b[5m ", "│ carol\\u202e ")


async def test_a_received_file_name_is_drawn_as_typed() -> None:
    NAME = "[bold]plan[red] v2.pdf"  # noqa: N806
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        head, chunks = split_file(
            bytes(100_000), 65536, transfer_id=b"F" * 8, sent_at=int(T0), name=NAME
        )
        client.events.put_nowait(client.receive(2, head.encode()))
        client.events.put_nowait(client.receive(2, next(chunks).encode()))
        await shows(pilot, app, "sends a file: [bold]plan[red] v2.pdf")
        title = app.query_one(TransferRow).query_one(".transfer-title")
        await until(lambda: "carol: [bold]plan[red]" in " ".join(drawn(title)), what="file row")


async def test_reasons_quoted_from_the_relay_are_drawn_escaped() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(MessageRejected(7, "bad_tag", "forged\x1b[2J [bold]x"))
        client.events.put_nowait(RelayError(4, "go away\x1b]0;t\x07 [/]"))
        client.events.put_nowait(
            ConnectionChanged("reconnecting", "127.0.0.1:7000", 3.0, "closed\x1b[31m [/]")
        )
        await shows(
            pilot,
            app,
            "forged\\x1b[2J [bold]x",
            "go away\\x1b]0;t\\x07 [/]",
            "closed\\x1b[31m [/]",
        )
