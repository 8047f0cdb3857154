"""File-system durability helpers shared by the kit and the state database."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the directory entries in `path` (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dirs(path: Path) -> list[Path]:
    """`mkdir -p path`, every directory it creates mode 0700 whatever the umask (those
    that exist are left as they are). Returns the directories it made, outermost first."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    missing.reverse()
    for made in missing:
        try:
            made.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it first: not ours to change
        os.chmod(made, 0o700)  # mkdir's mode is cut by the umask
    return missing
