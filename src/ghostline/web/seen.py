"""The last message the person saw on the page, so that it can mark what is "new since
you left". Kept beside the state database, in a file of its own: a display preference,
not state GhostLine's safety depends on."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path


class SeenMarker:
    """The last message the person saw on the page, kept beside the state database so
    that the page can mark what is "new since you left". A display preference: not
    fsynced, and a lost or damaged file only loses the marker."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.stem + ".web-seen")
        self.key: str | None = None

    async def load(self) -> None:
        def read() -> str | None:
            try:
                text = self.path.read_text("ascii").strip()
            except (OSError, UnicodeDecodeError):
                return None
            return text if _is_message_id(text) else None

        self.key = await asyncio.to_thread(read)

    async def save(self, key: str) -> None:
        if not _is_message_id(key) or key == self.key:
            return
        self.key = key

        def write() -> None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(key)
            os.replace(tmp, self.path)

        await asyncio.to_thread(write)


_MESSAGE_ID = re.compile(r"m[0-9]{1,3}-[0-9]{1,20}")


def _is_message_id(text: str) -> bool:
    return _MESSAGE_ID.fullmatch(text) is not None
