"""A very long message is folded in the chat app: 100,000 lines drawn as one widget of
100,001 rows froze the app for about a minute (measured); folded, it is a few dozen."""

from __future__ import annotations

from test_tui_display import make_app, shows
from tui_fakes import T0, header

from ghostline.display import FOLD_LINES
from ghostline.protocol.payload import encode_text
from ghostline.tui.widgets import MessageLine


async def test_a_message_of_a_hundred_thousand_lines_is_folded_with_how_much_is_left() -> None:
    app, client = make_app(header(slice_len=1 << 20))
    async with app.run_test(size=(120, 40)) as pilot:
        text = "top\n" + "\n" * 100_000 + "bottom"
        client.events.put_nowait(client.receive(1, encode_text(text, int(T0))))
        client.events.put_nowait(client.receive(2, encode_text("after it", int(T0))))
        await shows(pilot, app, "after it")
        long, after = app.query(MessageLine)
        assert long.size.height <= FOLD_LINES + 2
        more = f"{100_002 - FOLD_LINES:,} more lines not shown"
        await shows(pilot, app, more)


async def test_one_enormous_line_is_folded_too() -> None:
    app, client = make_app(header(slice_len=1 << 21))
    async with app.run_test(size=(120, 40)) as pilot:
        client.events.put_nowait(client.receive(1, encode_text("word " * 200_000, int(T0))))
        client.events.put_nowait(client.receive(2, encode_text("after it", int(T0))))
        await shows(pilot, app, "after it")
        long, after = app.query(MessageLine)
        assert long.size.height < 100
        await shows(pilot, app, "996,000 more characters not shown")
