"""How long the local history is kept, in words: `ghostline history` and the chat
app's /info say it alike."""

from __future__ import annotations


def describe_keep(days: int | None) -> str:
    """How long history is kept, in words (the CLI and the chat app's /info)."""
    if days is None:
        return "kept until you clear it"
    if days == 0:
        return "off: nothing is kept (parts of a received file only until it is saved)"
    return f"kept for {days} day{'s' if days != 1 else ''}, then deleted"
