"""File-system durability helpers shared by kits, the state database and saved files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

# os.link fails with one of these where the file system has no hard links (FAT and
# exFAT USB sticks, some network shares).
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)


def fsync_path(path: Path) -> None:
    """fsync the file or directory `path` (for a directory: its entries, such as a new or
    renamed file, become durable)."""
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


def publish_new(tmp: Path, path: Path) -> None:
    """Give the complete, fsynced file `tmp` the name `path`, never replacing a file
    there, and make the name durable (the directory is fsynced).

    A hard link claims the name atomically and fails if it exists (FileExistsError:
    nothing changed, `tmp` is left to the caller). Without hard links the name is
    claimed with O_EXCL and `tmp` renamed over that empty placeholder: a crash between
    the two leaves an empty file under the name, never a half-written one. On success
    `tmp` is gone. If the directory cannot be fsynced the name is removed again (it is
    not known to be durable) and the OSError raised.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.replace(tmp, path)
    else:
        tmp.unlink()
    try:
        fsync_path(path.parent)
    except OSError:
        path.unlink(missing_ok=True)
        raise
