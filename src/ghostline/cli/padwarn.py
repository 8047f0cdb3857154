"""Warnings on stderr when the own pad runs low: once when 10% is left, once at 1%,
once when it is used up (the figures and thresholds: state/usage.py; the sentence, the
one the chat app and the web page show: wording/padleft.py)."""

from __future__ import annotations

import click

from ..state.usage import PadLeft, PadLevel, worse
from ..wording.padleft import pad_warning


class PadWarnings:
    """Says each level once, as the pad gets worse than `seen` (the level already known,
    so a `send` warns only when its own message crossed a threshold)."""

    def __init__(self, seen: PadLevel = "ok") -> None:
        self.seen: PadLevel = seen

    def check(self, pad: PadLeft) -> None:
        if worse(pad.level, self.seen):
            self.seen = pad.level
            click.echo(f"ghostline: warning: {pad_warning(pad)}", err=True)
