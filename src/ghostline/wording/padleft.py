"""How much pad is left, in words: the share as a percentage, what it still seals, and
the warning when it runs low. The chat app's gauge, banner and file offers, the web
page's, and `send`/`listen`'s warnings on stderr say it alike (the figures and
thresholds: state/usage.py)."""

from __future__ import annotations

from ..state.usage import PadLeft, PadLevel
from ..units import format_size

PAD_WARNINGS: dict[PadLevel, str] = {
    "ok": "",
    "low": (
        "Your pad is running low: {pct} left ({summary}). Plan a meeting with your group to "
        "make a new kit set."
    ),
    "critical": (
        "Your pad is almost used up: {pct} left ({summary}). Meet your group soon to make a "
        "new kit set."
    ),
    "exhausted": (
        "Your pad is used up: you cannot send with this kit any more. You can still read "
        "what others send. Meet the group in person and make a new kit set with "
        "`ghostline pad new`."
    ),
}


def pad_warning(pad: PadLeft) -> str:
    return PAD_WARNINGS[pad.level].format(pct=percent(pad.fraction_left), summary=pad_summary(pad))


def percent(fraction: float) -> str:
    value = fraction * 100
    if value >= 10 or value == 0:
        return f"{value:.0f}%"
    return f"{value:.1f}%"


def pad_summary(pad: PadLeft) -> str:
    msgs = "message" if pad.msgs_left == 1 else "messages"
    return f"{format_size(pad.bytes_left)} and {pad.msgs_left:,} {msgs}"
