"""Reading a member's history a page at a time, newest first, for the chat app and each
web page.

Each older page is the one before the oldest entry already read (`Member.history(...,
before=entry)`), never "the newest N after the first M": messages that arrive while a
page is open would shift such a window, and the next page would repeat entries already
shown (or, after a deletion, skip some).
"""

from __future__ import annotations

import threading
from typing import Any


class HistoryPages:
    """One reader's position in `member`'s history. Blocking (it reads the database):
    apps call it from a worker thread. Safe to call from several threads."""

    def __init__(self, member: Any, size: int) -> None:
        self.member = member
        self.size = size
        self.more = False  # whether older entries may exist before the oldest read
        self._oldest: Any = None
        self._lock = threading.Lock()

    def newest(self) -> list[Any]:
        """The newest page (oldest first); older pages go on from its first entry."""
        with self._lock:
            entries: list[Any] = self.member.history(self.size)
            self._oldest = entries[0] if entries else None
            self.more = len(entries) >= self.size
            return entries

    def older(self) -> list[Any]:
        """The page before the oldest entry read so far (oldest first); empty when there
        is none, or before `newest`."""
        with self._lock:
            if self._oldest is None:
                return []
            entries: list[Any] = self.member.history(self.size, before=self._oldest)
            if entries:
                self._oldest = entries[0]
            self.more = len(entries) >= self.size
            return entries
