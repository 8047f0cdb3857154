"""The web session with format-2 kits: grants in the conversation and the history, every
member's pad as it stands after a grant, and failed checks in the member list. A real
member on a real kit, an unstarted client, events made by real members."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from session_page import Page

from ghostline.client import Client, MessageReceived, MessageRejected, PadGiven, RelayAddress
from ghostline.errors import RejectedMessage
from ghostline.protocol.payload import decode, encode_text
from ghostline.state.member import Member
from ghostline.web.session import WebSession
from helpers import flip, make_kit_set
from waiting import until

E = 8192


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[tuple[WebSession, Member, Member]]:
    kits = make_kit_set(tmp_path / "kits", ["alice", "bob", "carol"], slice_len=E, format=2)
    bob = Member.open(kits[1])
    client = Client(bob, [RelayAddress.parse("127.0.0.1:9")])  # never started
    web = WebSession(client, relay="127.0.0.1:9", transport="no TLS · no proxy")
    await web.start(connect=False)
    alice, carol = Member.open(kits[0]), Member.open(kits[2])
    yield web, alice, carol
    await web.stop()
    for m in (alice, bob, carol):
        m.close()


async def test_a_grant_is_a_line_and_the_member_list_shows_the_pad_it_moved(
    group: tuple[WebSession, Member, Member],
) -> None:
    session, alice, _ = group
    page = Page(session)
    gift = alice.give(1, 2048)
    received = session.member.receive(1, gift.entry.sealed)
    session.handle_event(MessageReceived(received, decode(received.payload)))
    (line,) = page.lines()
    assert (line["kind"], line["lines"]) == ("notice", ["alice gave you 2 KiB of pad"])
    await until(
        lambda: (
            page.shown("members") and page.last("members")["pad"]["summary"].startswith("10 KiB")
        )
    )
    snapshot = await session.snapshot()  # and from the history, for a page opened later
    assert snapshot["lines"][-1]["lines"] == ["alice gave you 2 KiB of pad"]


async def test_an_automatic_gift_is_said_and_a_failed_check_is_counted_in_the_list(
    group: tuple[WebSession, Member, Member],
) -> None:
    session, alice, carol = group
    page = Page(session)
    gift = session.member.give(2, 1024)  # as the client's giver would, then PadGiven
    session.handle_event(PadGiven(gift.grant, gift.entry.counter))
    assert page.lines()[0]["lines"] == [
        "you gave carol 1 KiB of pad (automatically: carol was running low)"
    ]
    sealed = alice.seal(encode_text("hello", 0)).sealed
    with pytest.raises(RejectedMessage) as rejected:
        session.member.receive(1, flip(sealed, len(sealed) - 20))  # bob's tag, the first
    session.handle_event(MessageRejected(1, rejected.value.rule, rejected.value.message))
    assert "the sender's kit or yours is damaged" in page.lines()[-1]["lines"][0]
    await until(
        lambda: page.shown("members") and page.last("members")["members"][0]["failed"] is not None
    )
    assert page.last("members")["members"][0]["failed"].startswith("1 failed check")
    assert page.last("members")["members"][2]["failed"] is None
