"""`ghostline pad give KIT MEMBER SIZE`: give part of your unused pad to another member
(format-2 kits; docs/PROTOCOL.md section 15), sealed and sent like a message.

Everything that can be wrong with the command line is found before anything is given:
the connection options, the size, the member, and whether this kit can give that much
in one piece. It asks before giving (the pad is gone from your kit for good), then
takes the range out of your pad durably, writes it to the kit's grant journal, seals
the grant and sends it as `send` does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from ..display import quote
from ..errors import GiftTooLarge, UsageError
from ..protocol.kitformat import FORMAT_1
from ..units import format_size, parse_size
from ..wording.padtalk import gift_sentence
from .chatsend import send_pending
from .connect import accept_timeout_option, connection_options, connection_settings
from .kits import KIT_ARGUMENT, open_member
from .terminal import status


@click.command("give")
@KIT_ARGUMENT
@click.argument("member_name", metavar="MEMBER")
@click.argument("size_text", metavar="SIZE")
@connection_options
@accept_timeout_option("the grant")
@click.option("--yes", is_flag=True, help="Do not ask before giving.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing when all goes well.")
def give(
    kit: Path,
    member_name: str,
    size_text: str,
    timeout: float,
    yes: bool,
    quiet: bool,
    **opts: Any,
) -> None:
    """Give SIZE bytes of KIT's unused pad to MEMBER (format-2 kits).

    The pad leaves your kit for good: once MEMBER's kit accepts the grant, MEMBER
    sends with it, and every member's kit knows it is MEMBER's. `listen`, `chat` and
    `web` give on their own when a member runs low (see --no-auto-give); this command
    is for giving by hand. Asks first (--yes skips the question). The grant is sealed
    and kept in the outbox before anything is sent, like a message; exit status 2
    (a usage error) means nothing was given.
    """
    settings = connection_settings(opts)
    size = parse_size(size_text, what="SIZE")
    if size < 1:
        raise UsageError("SIZE must be at least 1 byte")
    with open_member(kit) as member:
        h = member.header
        if h.format == FORMAT_1:
            raise UsageError(
                f"{kit} is a format-1 kit: its members' slices cannot move",
                hint="Giving pad needs a format-2 kit set (`ghostline pad new` makes them).",
            )
        names = [m.name for m in h.members]
        if member_name not in names:
            raise UsageError(
                f"no member {quote(member_name)} in this group; its members are "
                + ", ".join(quote(n) for n in names)
            )
        to = names.index(member_name)
        if to == member.index:
            raise UsageError("you cannot give pad to yourself")
        largest = member.giftable()
        if size > largest:
            raise GiftTooLarge(size, largest)
        left = member.own_pad().bytes_left
        if not yes:
            click.confirm(
                f"Give {quote(member_name)} {format_size(size)} of your pad? You keep "
                f"about {format_size(max(0, left - size))}; the pad you give is "
                f"{quote(member_name)}'s for good. Continue?",
                abort=True,
                err=True,
            )
        gift = member.give(to, size)
        if not quiet:
            said = gift_sentence("you", quote(member_name), size)
            status(f"{said} (group pad bytes {gift.grant.start}-{gift.grant.end - 1}); sending it")
        asyncio.run(send_pending(member, settings, timeout, quiet))
