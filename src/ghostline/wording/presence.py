"""Members coming online and going offline, in words: `listen`, the chat app and the
web page word `presencenotes`' notes alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..presencenotes import PresenceNote


def presence_note_text(note: PresenceNote, name: str) -> str:
    """A presence note (`presencenotes`) about the member called `name` (shown safely)."""
    if note.changes == 1:
        return f"{name} came online" if note.online else f"{name} went offline"
    where = "online" if note.online else "offline"
    return f"{name} came and went ({note.changes} changes, not told one by one); {where} now"
