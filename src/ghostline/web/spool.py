"""The private folder where `ghostline web` keeps uploads waiting to be sent, and the
removal of such folders left by processes that were killed.

Each process makes `ghostline-web-spool-PID-XXXXXXXX` (mode 0700) in the system's
temporary folder and holds an exclusive flock on the folder while it runs: the kernel
drops the lock when the process ends, however it ends (SIGKILL, a crash, power loss
aside). So a folder of this user whose lock can be taken belongs to no running process,
and a starting `ghostline web` removes it with the uploads in it. A folder is never
removed while its process holds the lock; the name's pid is for people, not the check.

Earlier versions made `ghostline-web-XXXXXXXX` and took no lock, so such a folder says
nothing of its process: it is removed only when no other `ghostline web` of this user
that may keep its uploads there runs at all (`spoolusers`; never where that cannot be
told). Each folder removed is logged, as a line on the console.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .spoolusers import another_web_may_use

log = logging.getLogger("ghostline.web")

PREFIX = "ghostline-web-spool-"
# An earlier version's folder: tempfile.mkdtemp(prefix="ghostline-web-"), 8 characters
# of tempfile's alphabet after it (no "-": never one of PREFIX's).
EARLIER = re.compile(r"ghostline-web-[a-z0-9_]{8}")


@dataclass(frozen=True)
class Abandoned:
    """A spool folder no running process holds: `files` uploads were left in it."""

    path: Path
    files: int
    earlier: bool  # made by an earlier version (no lock)


class Spool:
    """This process's spool folder (`path`), locked until `close`, which removes it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def create(cls, parent: Path | None = None) -> Spool:
        """Remove the folders left by killed processes, then make and lock our own in
        `parent` (default: the system's temporary folder)."""
        parent = Path(parent if parent is not None else tempfile.gettempdir())
        for gone in remove_abandoned(parent):
            kind = "an earlier version of ghostline web" if gone.earlier else "ghostline web"
            log.info(
                "removed %s, the upload folder of %s that no longer runs (%d %s left in it)",
                gone.path, kind, gone.files, "file" if gone.files == 1 else "files",
            )  # fmt: skip
        while True:
            path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
            fd = _locked(path)
            if fd is not None:
                return cls(path, fd)
            # Another process starting at this instant took it for abandoned, between
            # mkdtemp and the lock: it is removing it. Make another.

    def close(self) -> None:
        """Remove the folder with every upload in it, then let go of the lock."""
        if self._fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)
        self._fd = None


def remove_abandoned(parent: Path) -> list[Abandoned]:
    """Remove every spool folder of this user in `parent` that no running process holds:
    those whose lock can be taken, and an earlier version's when no other `ghostline web`
    may keep its uploads in `parent` (`another_web_may_use`). The folders removed."""
    with os.scandir(parent) as entries:
        names = [e.name for e in entries if e.name.startswith(PREFIX) or EARLIER.fullmatch(e.name)]
    # Asked after the listing: a process of an earlier version that starts later makes
    # its folder after it too, so none listed is one it may use unseen.
    earlier_in_use = any(not n.startswith(PREFIX) for n in names) and another_web_may_use(parent)
    removed = []
    for name in names:
        path, earlier = parent / name, not name.startswith(PREFIX)
        if earlier and earlier_in_use:
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue  # not ours to judge: another user's, or not a folder at all
        fd = _locked(path)
        if fd is None:
            continue  # its process is running (or it is gone)
        try:
            files = len(os.listdir(fd))
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)  # after the removal: a process starting now cannot take it
        if os.path.lexists(path):
            log.warning(
                "could not remove %s, an upload folder left behind: remove it by hand", path
            )
        else:
            removed.append(Abandoned(path, files, earlier))
    return removed


def _locked(path: Path) -> int | None:
    """The folder `path` opened and flocked, or None when another process holds it or
    it is no longer the folder at `path` (removed, or replaced, before the lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held, now = os.fstat(fd), path.lstat()
        if (held.st_ino, held.st_dev) == (now.st_ino, now.st_dev):
            return fd
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
    with contextlib.suppress(OSError):
        os.close(fd)
    return None
