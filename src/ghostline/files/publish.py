"""Publish a file under a name that does not exist yet, never over another, never half.

The bytes go to a temporary file that is fsynced, then hard-linked to the final name
(which fails rather than replacing an existing file); a half-written file never
carries the final name. On file systems without hard links (some network and FAT
ones) the name is claimed with O_EXCL and the complete file moved over that empty
placeholder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..fsutil import fsync_dir, make_private_dirs
from .names import safe_file_name


def candidate_names(name: str) -> list[str]:
    """`name`, then `stem (1).ext`, `stem (2).ext`, … (a long but finite list)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    return [name] + [f"{stem} ({i}){suffix}" for i in range(1, 1000)]


def save_new_file(directory: Path, name: str, data: bytes) -> Path:
    """Write `data` into `directory` under `name` (made safe by `safe_file_name`), or
    the first free "name (k).ext". The directory is fsynced before returning, so the
    returned name is durable (and may be recorded as saved). Blocking."""
    name = safe_file_name(name)
    make_private_dirs(directory)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".ghostline-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        target = _link_free_name(tmp, directory, name)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fsync_dir(directory)
    except OSError:
        target.unlink(missing_ok=True)  # not known to be durable: not saved
        raise
    return target


def _link_free_name(source: Path, directory: Path, name: str) -> Path:
    for candidate in candidate_names(name):
        target = directory / candidate
        try:
            _link_exclusive(source, target)
        except FileExistsError:
            continue
        return target
    raise FileExistsError(f"too many files named like {name} in {directory}")


def _link_exclusive(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.replace(source, target)
