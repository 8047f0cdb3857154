"""Pad figures for the chat screen, from `Member.usage()` and from what happens live.

`Member.usage()` is read when the app opens, on the client's pad events and for `/info`.
Between those, each sealed or received message moves its sender's figures exactly as
usage() would: keys used = highest counter + 1, bytes used = highest end of a range.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from ..cli.history import describe_keep
from ..display import one_line
from ..state.padlevel import PadLeft
from ..units import format_size
from .view import percent


def read_pads(member: Any) -> dict[int, PadLeft]:
    """Every member's slice as `PadLeft`, from `member.usage()`."""
    usage = member.usage()
    return {
        m.index: PadLeft(m.bytes_left, usage.slice_len, m.keys_left, usage.auth_keys)
        for m in usage.members
    }


def after_message(pad: PadLeft, *, counter: int, end: int) -> PadLeft:
    """`pad` once a message with `counter` whose range ends at `end` is used."""
    keys_left = min(pad.msgs_left, max(0, pad.msgs_total - (counter + 1)))
    bytes_left = min(pad.bytes_left, max(0, pad.bytes_total - end))
    return PadLeft(bytes_left, pad.bytes_total, keys_left, pad.msgs_total)


def pad_table(member: Any, online: frozenset[int]) -> Table:
    """The `/info` table: the group's pad, member by member."""
    usage = member.usage()
    header = member.header
    # Names and the group come from the kit: Text, so Rich reads no markup in them.
    table = Table(
        title=Text(
            f"{one_line(header.group)} · {header.n} members · "
            f"slice {format_size(usage.slice_len)}, {usage.auth_keys:,} messages each"
        ),
        caption=(
            f"{percent(usage.erased_fraction)} of this kit's secret bytes are erased. "
            "Online status is reported by the relay and not authenticated.\n"
            f"History on this device: {describe_keep(member.history_keep)} "
            "(ghostline history KIT --keep forever|30d|off, or --clear)."
        ),
        expand=True,
    )
    table.add_column("member")
    table.add_column("online")
    table.add_column("messages", justify="right")
    table.add_column("pad left", justify="right")
    table.add_column("keys left", justify="right")
    table.add_column("≈ msgs left", justify="right")
    table.add_column("left", justify="right")
    for m in usage.members:
        pad = PadLeft(m.bytes_left, usage.slice_len, m.keys_left, usage.auth_keys)
        table.add_row(
            Text(f"{one_line(m.name)} (you)" if m.is_self else one_line(m.name)),
            "you" if m.is_self else ("yes" if m.index in online else "no"),
            f"{m.messages:,}",
            format_size(m.bytes_left),
            f"{m.keys_left:,}",
            f"{m.messages_left:,}",
            percent(pad.fraction_left),
        )
    return table
