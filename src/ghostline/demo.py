"""`ghostline demo`: the whole system on loopback, told as a short story.

Everything runs in one asyncio loop inside a temporary directory (GHOSTLINE_HOME points
there, so nothing touches the user's data): a three-member kit set of format 2 (the
default), the blind relay and presence servers on free ports, three `Client`s, and
`FrameProxy` (frameproxy.py), a meddling network hop that flips one byte of one message
on its way to Carol. Alice gives Carol part of her pad, and Carol sends with it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console
from rich.table import Table

from .frameproxy import FrameProxy, Tamperer

if TYPE_CHECKING:
    from .client import Client, Event
    from .state.member import Member

E = TypeVar("E")

# --- the story ------------------------------------------------------------------------


class _Person:
    """A member, their client, and the events they have not looked at yet."""

    def __init__(self, name: str, member: Member, client: Client, style: str) -> None:
        self.name = name
        self.member = member
        self.client = client
        self.label = f"[{style}]{name.capitalize()}[/]"

    async def expect(self, kind: type[E], test: Callable[[E], bool] = lambda e: True) -> E:
        """The next event of `kind` that passes `test` (others are skipped), within 10 s."""
        async with asyncio.timeout(10):
            while True:
                event: Event = await self.client.events.get()
                if isinstance(event, kind) and test(event):
                    return event


class _Story:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.step = 0

    def chapter(self, text: str) -> None:
        self.step += 1
        self.console.print(f"\n[bold]{self.step}.[/] {text}")

    def line(self, text: str) -> None:
        self.console.print(f"   {text}")


async def run_demo(console: Console | None = None, workdir: Path | None = None) -> None:
    """Tell the story; raises if any step does not happen as told."""
    console = console or Console(highlight=False)
    if workdir is not None:
        await _run(console, workdir)
        return
    with tempfile.TemporaryDirectory(prefix="ghostline-demo-") as tmp:
        await _run(console, Path(tmp))


async def _run(console: Console, root: Path) -> None:
    old_home = os.environ.get("GHOSTLINE_HOME")
    os.environ["GHOSTLINE_HOME"] = str(root / "home")
    try:
        await _story(console, root)
    finally:
        if old_home is None:
            os.environ.pop("GHOSTLINE_HOME", None)
        else:
            os.environ["GHOSTLINE_HOME"] = old_home


async def _story(console: Console, root: Path) -> None:
    from .client import (
        Client,
        ConnectionChanged,
        MessageReceived,
        MessageRejected,
        PresenceChanged,
    )
    from .client.transport import RelayAddress
    from .pad.kitset import create_kit_set, default_auth_keys
    from .protocol.kitformat import DEFAULT_LENGTH_STEP
    from .protocol.payload import GrantPayload, TextPayload
    from .relay import RelayLimits, RelayServer, SqliteBackend
    from .state.member import Member
    from .units import format_size

    started = time.monotonic()
    story = _Story(console)
    console.print("[bold]GhostLine demo[/]: three friends, one blind relay, all on this machine.")
    console.print(f"[dim]Working in {root} (deleted at the end).[/]")

    names = ["alice", "bob", "carol"]
    styles = {"alice": "magenta", "bob": "cyan", "carol": "green"}
    kits_dir = root / "kits"
    kits_dir.mkdir(mode=0o700)
    slice_len = 64 * 1024
    auth_keys = default_auth_keys(slice_len, len(names), 2)
    paths = create_kit_set(
        kits_dir,
        names,
        slice_len=slice_len,
        auth_keys=auth_keys,
        group="demo",
        random_bytes=os.urandom,
        entropy="os.urandom (demo)",
        format=2,
        length_step=DEFAULT_LENGTH_STEP,
    )
    story.chapter(
        "Alice, Bob and Carol meet in person and make a kit set (format 2): one kit each, "
        f"{slice_len // 1024} KiB of one-time pad per member to start with and "
        f"{auth_keys:,} one-time masks per pair. Every message is padded to a multiple of "
        f"{DEFAULT_LENGTH_STEP} bytes, so the relay cannot see its exact length."
    )
    story.line(f"[dim]{', '.join(p.name for p in paths)} in {kits_dir}[/]")

    server = RelayServer(SqliteBackend(root / "relay.sqlite"), RelayLimits())
    relay_port, presence_port = await server.start("127.0.0.1", 0, 0)
    story.chapter(
        f"A blind relay starts on 127.0.0.1:{relay_port} (presence on {presence_port}). "
        "It stores and forwards sealed bytes; it holds no pad and no key."
    )

    tamperer = Tamperer()
    proxy = FrameProxy("127.0.0.1", relay_port, tamperer)
    proxy_port = await proxy.start()
    relay_addr = RelayAddress("127.0.0.1", relay_port, presence_port)
    members = {name: Member.open(path) for name, path in zip(names, paths, strict=True)}
    people: dict[str, _Person] = {}

    def person(name: str, via_proxy: bool = False) -> _Person:
        addr = RelayAddress("127.0.0.1", proxy_port, presence_port) if via_proxy else relay_addr
        client = Client(members[name], [addr], ping_interval=5.0)
        people[name] = _Person(name, members[name], client, styles[name])
        return people[name]

    async def say(who: _Person, text: str) -> int:
        entry = await who.client.send_text(text)
        seq = await who.client.wait_accepted(entry.counter, timeout=10)
        story.line(
            f'{who.label} → group: "{text}"  [dim](message {entry.counter}, '
            f"{entry.length} bytes of pad; relay seq {seq})[/]"
        )
        return seq

    async def reads(who: _Person, seq: int) -> None:
        ev = await who.expect(MessageReceived, lambda e: e.received.seq == seq)
        rec, obj = ev.received, ev.payload_obj
        sender = rec.sender_name.capitalize()
        if isinstance(obj, GrantPayload):
            size = format_size(obj.end - obj.start)
            story.line(
                f"{who.label} sees: {sender} gave {names[obj.to].capitalize()} {size} of pad "
                f"[dim](seq {rec.seq}, verified; group pad bytes {obj.start:,}-"
                f"{obj.end - 1:,} are {names[obj.to].capitalize()}'s now)[/]"
            )
            return
        text = obj.text if isinstance(obj, TextPayload) else "?"
        story.line(f'{who.label} reads {sender}\'s "{text}" [dim](seq {rec.seq}, verified)[/]')

    def presence_line(who: _Person, ev: PresenceChanged) -> None:
        for i in sorted(ev.joined):
            if i != who.member.index:
                story.line(f"{who.label} sees {names[i].capitalize()} come online")
        for i in sorted(ev.left):
            story.line(f"{who.label} sees {names[i].capitalize()} go offline")

    try:
        alice, bob = person("alice"), person("bob")
        story.chapter("Alice and Bob come online; Carol's laptop is closed.")
        await alice.client.start()
        await alice.expect(ConnectionChanged, lambda e: e.state == "connected")
        await bob.client.start()
        await bob.expect(ConnectionChanged, lambda e: e.state == "connected")
        ev = await alice.expect(PresenceChanged, lambda e: bob.member.index in e.online)
        presence_line(alice, ev)

        story.chapter("They talk.")
        seq = await say(alice, "Lunch at noon? Carol is still on the train.")
        await reads(bob, seq)
        talked = [seq]
        seq = await say(bob, "Noon works. I'll bring the maps.")
        await reads(alice, seq)
        talked.append(seq)

        story.chapter("Alice writes while Carol is offline; the relay keeps the sealed bytes.")
        missed = [
            await say(alice, "Carol: we meet at the old library."),
            await say(alice, "Bring the blue notebook."),
        ]
        for seq in missed:
            await reads(bob, seq)

        carol = person("carol", via_proxy=True)
        story.chapter(
            "Carol comes online, through a network hop that Mallory controls, and catches up "
            "from where her cursor stopped."
        )
        await carol.client.start()
        await carol.expect(ConnectionChanged, lambda e: e.state == "connected")
        ev = await alice.expect(PresenceChanged, lambda e: carol.member.index in e.joined)
        presence_line(alice, ev)
        for seq in [*talked, *missed]:
            await reads(carol, seq)

        story.chapter("Mallory flips one bit of the next message on its way to Carol.")
        tamperer.armed = 1
        seq = await say(bob, "The code word is 'heron'.")
        await reads(alice, seq)
        rejected = await carol.expect(MessageRejected)
        story.line(
            f"{carol.label} [bold red]rejects[/] seq {rejected.seq}: {rejected.reason} "
            f"[dim](rule {rejected.rule}; nothing consumed)[/]"
        )
        seq = await say(bob, "Carol, did you get that? Someone meddled with it.")
        await reads(carol, seq)
        await reads(alice, seq)
        seq = await say(carol, "Only this one arrived intact. Tell me again at lunch.")
        await reads(alice, seq)
        await reads(bob, seq)

        story.chapter(
            "Carol will write the most this month, and Alice has pad to spare: Alice gives "
            "Carol 16 KiB of hers (`ghostline pad give`; `listen`, `chat` and `web` also "
            "give on their own to a member running low)."
        )
        gift = await alice.client.give(carol.member.index, 16 * 1024)
        seq = await alice.client.wait_accepted(gift.entry.counter, timeout=10)
        story.line(
            f"{alice.label} takes bytes {gift.grant.start:,}-{gift.grant.end - 1:,} out of her "
            f"pad for good, notes them in her kit's grant journal, and sends the grant "
            f"[dim](relay seq {seq})[/]"
        )
        await reads(bob, seq)
        await reads(carol, seq)
        entry = await carol.client.send_text("Thanks, Alice! Writing up the notes now.")
        seq = await carol.client.wait_accepted(entry.counter, timeout=10)
        story.line(
            f'{carol.label} → group: "Thanks, Alice! Writing up the notes now."  '
            f"[dim](sealed in the pad Alice gave her: bytes {entry.offset:,}-"
            f"{entry.offset + entry.length - 1:,}; relay seq {seq})[/]"
        )
        if not gift.grant.start <= entry.offset < gift.grant.end:
            raise AssertionError("Carol's message is not in the pad Alice gave her")
        await reads(alice, seq)
        await reads(bob, seq)

        story.chapter("Bob goes offline.")
        await bob.client.stop()
        ev = await alice.expect(PresenceChanged, lambda e: bob.member.index in e.left)
        presence_line(alice, ev)

        story.chapter("What each member holds and has left (as its owner counts it):")
        console.print(_usage_table(members, names, styles))
        story.line(
            "[dim]Used pad bytes and keys are overwritten with zeros as soon as they are "
            "used, so a kit file taken later cannot decrypt recorded traffic (SSDs and "
            "copy-on-write filesystems may keep old blocks; the local history keeps "
            "plaintext: see docs/SECURITY.md).[/]"
        )
    finally:
        for p in people.values():
            await p.client.stop()
        await proxy.close()
        await server.close()
        for m in members.values():
            m.close()
    console.print(
        f"\n[bold green]The end.[/] Every message arrived exactly once, verified; the tampered "
        f"one was refused; the pad Alice gave is Carol's for everyone. "
        f"({time.monotonic() - started:.1f} s)"
    )


def _usage_table(members: dict[str, Member], names: list[str], styles: dict[str, str]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    columns = ("member", "messages sent", "pad held", "pad used", "pad left", "masks left")
    for column in columns:
        justify = "left" if column == "member" else "right"
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name in names:
        me = members[name].usage().me
        total = me.pad_size
        table.add_row(
            f"[{styles[name]}]{name.capitalize()}[/]",
            str(me.messages),
            f"{total:,} B",
            f"{me.bytes_used:,} B",
            f"{me.bytes_left:,} B ({me.bytes_left / total:.1%})",
            f"{me.keys_left:,}",
        )
    return table
