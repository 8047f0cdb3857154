"""The `/info` table of the chat app: the group's pad, member by member. The figures
are `Member.usage()`'s (state/usage.py); this module only words and lays them out."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from ..display import one_line
from ..units import format_size
from ..wording.history import describe_keep
from ..wording.padleft import percent


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
    two = header.format != 1
    if two:
        table.add_column("pad held", justify="right")  # format 2: after grants
    table.add_column("pad left", justify="right")
    table.add_column("masks left" if two else "keys left", justify="right")
    table.add_column("≈ msgs left", justify="right")
    table.add_column("left", justify="right")
    for m in usage.members:
        table.add_row(
            Text(f"{one_line(m.name)} (you)" if m.is_self else one_line(m.name)),
            "you" if m.is_self else ("yes" if m.index in online else "no"),
            f"{m.messages:,}",
            *((format_size(m.pad_size),) if two else ()),
            format_size(m.bytes_left),
            f"{m.keys_left:,}",
            f"{m.messages_left:,}",
            percent(m.fraction_left),
        )
    return table
