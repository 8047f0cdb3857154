"""Whether another running `ghostline web` may keep its uploads in a folder: the one test
there is for the upload folders of earlier versions, which took no lock (`spool`).

Read from /proc (Linux): a process of this user whose command line runs `ghostline
web` and whose temporary folder may be the folder asked about (any it could have
chosen: its TMPDIR, TEMP or TMP, /tmp, /var/tmp, /usr/tmp, its working folder, as
`tempfile.gettempdir` tries them). Whatever cannot be read counts as a yes, and so
does a system without /proc: a folder is never removed on a guess.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
# tempfile.gettempdir's candidates after the environment's, in its order.
FIXED_TEMP_DIRS = ("/tmp", "/var/tmp", "/usr/tmp")
TEMP_VARIABLES = (b"TMPDIR", b"TEMP", b"TMP")


def another_web_may_use(folder: Path) -> bool:
    """Whether a running `ghostline web` of this user, other than this process, may keep
    its uploads in `folder` (True when that cannot be told)."""
    if not (PROC / "self").is_dir():
        return True
    target = os.path.realpath(folder)
    me, uid = os.getpid(), os.getuid()
    for entry in os.scandir(PROC):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue  # another user's process cannot write in this user's folders
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # it ended
        if not runs_ghostline_web(argv):
            continue
        try:
            candidates = temp_candidates(
                Path(entry.path, "environ").read_bytes(), os.readlink(Path(entry.path, "cwd"))
            )
        except OSError:
            return True  # a `ghostline web` whose temporary folder cannot be told
        if target in {os.path.realpath(c) for c in candidates}:
            return True
    return False


def runs_ghostline_web(argv: list[bytes]) -> bool:
    """Whether a command line runs `ghostline web`: a word naming `ghostline` (the
    installed command, or `-m ghostline`), with `web` after it."""
    for i, word in enumerate(argv):
        if os.path.basename(word) == b"ghostline":
            return b"web" in argv[i + 1 :]
    return False


def temp_candidates(environ: bytes, cwd: str) -> list[str]:
    """Every folder `tempfile.gettempdir` may have chosen in a process with this
    environment (/proc/PID/environ) and working folder."""
    found = []
    for assignment in environ.split(b"\0"):
        name, _, value = assignment.partition(b"=")
        if name in TEMP_VARIABLES and value:
            found.append(os.path.join(cwd, os.fsdecode(value)))
    return [*found, *FIXED_TEMP_DIRS, cwd]
