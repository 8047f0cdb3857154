"""Names for received files: what another member wrote, made safe to create in a
downloads folder and to show."""

from __future__ import annotations

import re
import unicodedata

_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')
_MAX_NAME_BYTES = 200
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def safe_file_name(name: str, default: str = "file") -> str:
    """A bare file name safe to create in a downloads folder and to show.

    Keeps only the last path component (either slash), turns every kind of white space
    into a plain space, drops control, format (bidi overrides), private-use and
    unassigned characters, replaces characters Windows
    forbids, strips leading/trailing dots and spaces (no hidden files, no `..`),
    dodges Windows device names and caps the length at 200 UTF-8 bytes, keeping the
    extension. Returns `default` when nothing is left.
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(
        " " if ch.isspace() else ch
        for ch in name
        if unicodedata.category(ch) not in _DROP_CATEGORIES or ch.isspace()
    )
    name = _UNSAFE_CHARS.sub("_", name).strip(" .")
    if not name:
        return default
    if name.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or len(ext.encode("utf-8")) > 20:
            stem, ext = name, ""
        room = _MAX_NAME_BYTES - (len(ext.encode("utf-8")) + 1 if ext else 0)
        stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
        name = f"{stem}.{ext}" if ext else stem
    return name or default
