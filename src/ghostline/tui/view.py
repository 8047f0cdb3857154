"""Pure helpers the chat widgets share: times and colours. No Textual.

Kept apart from the widgets so the rules (how to name a day, which colour a member
keeps) are tested without a terminal. What the chat app says alike with the web page
(pad left, events, grants, files) is in `ghostline.wording`.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

# Distinct on dark and light themes; a member keeps its colour because it is chosen by
# kit index, which every member's kit agrees on.
SENDER_COLOURS = (
    "#5fafff",
    "#ff875f",
    "#87d75f",
    "#d787ff",
    "#ffd75f",
    "#5fd7d7",
    "#ff5f87",
    "#afaf87",
)
OWN_COLOUR = "#b2b2b2"


def sender_colour(index: int) -> str:
    return SENDER_COLOURS[index % len(SENDER_COLOURS)]


def local_time(timestamp: float, tz: tzinfo | None) -> datetime:
    """The wall-clock time of `timestamp` in `tz` (the machine's zone when None)."""
    return datetime.fromtimestamp(timestamp, tz).astimezone(tz)


def clock_label(timestamp: float, tz: tzinfo | None) -> str:
    return local_time(timestamp, tz).strftime("%H:%M")


def day_label(timestamp: float, tz: tzinfo | None) -> str:
    return local_time(timestamp, tz).strftime("%A %d %B %Y")


def day_key(timestamp: float, tz: tzinfo | None) -> str:
    return local_time(timestamp, tz).strftime("%Y-%m-%d")


def countdown(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"
