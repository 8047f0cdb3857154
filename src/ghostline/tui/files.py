"""What the terminal adds to file transfer (the rest is `ghostline.files`): reading a
path as a person typed, pasted or dropped it into the terminal."""

from __future__ import annotations

from pathlib import Path


def typed_path(text: str) -> Path:
    """The path a person typed or dropped into the terminal: as is when that exists,
    else without surrounding quotes and with `\\ ` read as a space (how terminals
    paste a dragged file)."""
    raw = Path(text).expanduser()
    if raw.exists() or len(text) < 2:
        return raw
    if text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return Path(text.replace("\\ ", " ")).expanduser()
