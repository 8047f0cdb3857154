"""End to end: a member whose client joins and leaves the relay in a loop (a bug, or
someone doing it on purpose) puts every change on the other members' presence ports.
`listen` tells the first few and folds the rest (presencenotes.py); the chat app and
the web page use the same notes (tests/tui, tests/web)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from e2e_support import Listener

from ghostline.client import Client, PresenceChanged
from ghostline.client.transport import RelayAddress
from ghostline.presencenotes import BURST
from ghostline.protocol.frames import Port
from ghostline.state.member import Member
from helpers import RelayProcess, kits_by_name, make_kit_set
from waiting import until

JOINS = 30


async def test_a_member_coming_and_going_in_a_loop_does_not_flood_listen(
    tmp_path: Path, home: Path
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", ["alice", "mallory", "carol"]))
    relay = await asyncio.to_thread(RelayProcess, tmp_path / "relay.sqlite")
    listener = Listener(kits["alice"], relay.relay_args(), home)
    address = RelayAddress("127.0.0.1", relay.relay_port, relay.presence_port)
    mallory = Member.open(kits["mallory"], state_path=tmp_path / "mallory.sqlite")
    carol = Member.open(kits["carol"], state_path=tmp_path / "carol.sqlite")
    try:
        await until(
            lambda: any("online now" in line for line in listener.stderr.lines),
            timeout=30,
            what="listen following presence",
        )
        async with Client(carol, [address]) as watcher:  # sees every change, as it comes
            await watcher.wait_connected(10)
            looping = Client(mallory, [address], presence=False)
            for _ in range(JOINS):
                session, _ = await looping.join(address, Port.RELAY)
                await session.close()
            changes = 0
            while changes < 2 * JOINS:
                event = await asyncio.wait_for(watcher.events.get(), 10)
                if isinstance(event, PresenceChanged):
                    changes += int(1 in event.joined) + int(1 in event.left)
        # Presence frames come in order on listen's one connection: once carol's own
        # leaving is told, every change of mallory's before it has been handled.
        await until(
            lambda: any("carol went offline" in line for line in listener.stderr.lines),
            timeout=30,
            what="carol's leaving told",
        )
        about_mallory = [line for line in listener.stderr.lines if "mallory" in line]
        assert 0 < len(about_mallory) <= BURST, about_mallory
    finally:
        listener.kill()
        mallory.close()
        carol.close()
        relay.kill()
