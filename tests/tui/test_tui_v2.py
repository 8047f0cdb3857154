"""The chat app with format-2 kits: a grant is a line, the member list shows each
member's pad as it stands after it and counts failed checks, an automatic gift is said.
Real members on real kits; a client that seals with the member and connects nowhere."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from tui_fakes import FixedClock

from ghostline.client import MessageReceived, MessageRejected, PadGiven
from ghostline.errors import RejectedMessage
from ghostline.protocol.payload import decode, encode_text
from ghostline.state.member import Member, OutboxEntry
from ghostline.tui.app import ChatApp
from ghostline.tui.messagelog import MessageLine
from ghostline.tui.widgets import MemberList
from helpers import flip, make_kit_set
from waiting import until

E = 8192
SIZE = (110, 32)


class MemberClient:
    """What the app uses of a Client, over a real member, with no relay."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, payload: bytes) -> OutboxEntry:
        return await asyncio.to_thread(self.member.seal, payload)

    async def send_many(self, payloads: Sequence[bytes]) -> list[OutboxEntry]:
        return await asyncio.to_thread(self.member.seal_many, list(payloads))


def texts(app: ChatApp) -> list[str]:
    return [str(line.line.text) for line in app.query(MessageLine)]


async def test_grants_failed_checks_and_gifts_in_the_chat_app(tmp_path: Path) -> None:
    kits = make_kit_set(tmp_path / "kits", ["alice", "bob", "carol"], slice_len=E, format=2)
    alice, bob, carol = (Member.open(k) for k in kits)
    client = MemberClient(bob)
    app = ChatApp(
        client, relay="127.0.0.1:9", transport="no TLS · no proxy", clock=FixedClock(),
        tz=UTC, downloads=lambda: tmp_path / "downloads", random_bytes=bytes,
    )  # fmt: skip
    try:
        async with app.run_test(size=SIZE) as pilot:
            members = app.query_one(MemberList)
            gift = alice.give(1, 2048)
            got = bob.receive(1, gift.entry.sealed)
            client.events.put_nowait(MessageReceived(got, decode(got.payload)))
            await until(lambda: "alice gave you 2 KiB of pad" in texts(app), poll=pilot.pause)
            # Bob's pad is what he holds now: his slice and alice's gift.
            await until(
                lambda: (
                    app.panel.pads[1].bytes_total == E + 2048
                    and app.panel.pads[0].bytes_total == E - 2048
                ),
                poll=pilot.pause,
            )
            sealed = carol.seal(encode_text("hi", 0)).sealed
            try:
                bob.receive(2, flip(sealed, len(sealed) - 3))
            except RejectedMessage as err:
                client.events.put_nowait(MessageRejected(2, err.rule, err.message))
            await until(lambda: any(r.failed for r in members.rows), poll=pilot.pause)
            assert [r.failed for r in members.rows] == [0, 0, 1]
            assert "1 failed check" in str(members.render())
            given = bob.give(2, 1024)
            client.events.put_nowait(PadGiven(given.grant, given.entry.counter))
            await until(
                lambda: (
                    "you gave carol 1 KiB of pad (automatically: carol was running low)"
                    in texts(app)
                ),
                poll=pilot.pause,
            )
            await app.action_quit()
    finally:
        for m in (alice, bob, carol):
            m.close()
