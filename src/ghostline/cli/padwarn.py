"""Warnings on stderr when the own pad runs low: once when 10% is left, once at 1%,
once when it is used up (the thresholds: padlevel.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..state.padlevel import PadLeft, PadLevel, worse
from ..units import format_size

if TYPE_CHECKING:
    from ..state.member import Member


def own_pad(member: Member) -> PadLeft:
    """What is left of the member's own slice and keys (exact, from the state)."""
    counter, offset = member.store.next_position()
    h = member.header
    return PadLeft(
        max(0, h.slice_len - offset), h.slice_len, max(0, h.auth_keys - counter), h.auth_keys
    )


class PadWarnings:
    """Says each level once, as the pad gets worse than `seen` (the level already known,
    so a `send` warns only when its own message crossed a threshold)."""

    def __init__(self, seen: PadLevel = "ok") -> None:
        self.seen: PadLevel = seen

    def check(self, pad: PadLeft) -> None:
        if worse(pad.level, self.seen):
            self.seen = pad.level
            click.echo(f"ghostline: warning: {pad_warning(pad)}", err=True)


def pad_warning(pad: PadLeft) -> str:
    left = (
        f"{pad.fraction_left:.1%} left: {format_size(pad.bytes_left)} of pad and "
        f"{pad.msgs_left:,} key{'s' if pad.msgs_left != 1 else ''}"
    )
    if pad.level == "exhausted":
        return (
            "your pad is used up: this kit cannot send any more (it can still read). "
            "Meet the group to make a new kit set."
        )
    if pad.level == "critical":
        return f"your pad is almost used up ({left}). Meet the group soon to make a new kit set."
    return f"your pad is running low ({left}). Plan a meeting to make a new kit set."
