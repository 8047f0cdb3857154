"""The web session pages older history by position and folds very long messages: a real
member (its own sealed messages fill the history), an unstarted client, no browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ghostline.client import Client, RelayAddress
from ghostline.display import FOLD_LINES
from ghostline.state.member import Member
from ghostline.web.session import WebSession
from helpers import make_kit_set

PAGE = 5


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[WebSession]:
    kits = make_kit_set(tmp_path / "kits", ["alice", "bob"], slice_len=1 << 18, auth_keys=64)
    member = Member.open(kits[0])
    client = Client(member, [RelayAddress.parse("127.0.0.1:9")])  # never started
    web = WebSession(client, relay="127.0.0.1:9", transport="no TLS", history_page=PAGE)
    await web.start(connect=False)
    yield web
    await web.stop()
    member.close()


def texts(lines: list[dict[str, Any]]) -> list[str]:
    return [line["lines"][0] for line in lines if line["kind"] == "message"]


async def test_older_pages_follow_on_from_what_the_page_shows_while_messages_arrive(
    session: WebSession,
) -> None:
    for i in range(12):
        assert await session.send_text(f"message {i}") is None
    pages = session.reader()
    snapshot = await session.snapshot(pages)
    assert texts(snapshot["lines"]) == [f"message {i}" for i in range(7, 12)]
    # Three more arrive while the page is open: the next page must still end just
    # before "message 7" (by count it would repeat 7, 8 and 9 and skip 2, 3 and 4).
    for i in range(12, 15):
        assert await session.send_text(f"message {i}") is None
    older = await session.older(pages)
    assert texts(older["lines"]) == [f"message {i}" for i in range(2, 7)]
    assert older["more"] is True
    last = await session.older(pages)
    assert texts(last["lines"]) == ["message 0", "message 1"]
    assert last["more"] is False
    assert texts((await session.older(pages))["lines"]) == []
    # Another page has its own place in the history.
    other = session.reader()
    assert texts((await session.snapshot(other))["lines"])[0] == "message 10"


async def test_a_very_long_message_comes_folded_and_whole_only_when_asked(
    session: WebSession,
) -> None:
    text = "first\n" + "\n" * 100_000 + "last"
    assert await session.send_text(text) is None
    assert await session.send_text("after it") is None
    snapshot = await session.snapshot()
    folded, after = [line for line in snapshot["lines"] if line["kind"] == "message"]
    assert folded["lines"] == ["first"] + [""] * (FOLD_LINES - 1)
    assert folded["more"] == f"{100_002 - FOLD_LINES:,} more lines"
    assert after["lines"] == ["after it"] and after["more"] is None

    whole = await session.whole(folded["id"])
    assert whole["error"] is None and whole["line"]["more"] is None
    assert whole["line"]["lines"] == ["first"] + [""] * 100_000 + ["last"]
    assert whole["line"]["id"] == folded["id"] and whole["line"]["own"] is True

    for ident in ("m0-999", "m9-0", "../etc", "m0-1e9"):
        missing = await session.whole(ident)
        assert missing["line"] is None and "not in this device's history" in missing["error"]
