"""What a person sees: a real `ghostline` process writing to a pseudo-terminal of a fixed
size, and its output drawn by a terminal emulator (pyte), which wraps long lines as a
real terminal does.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pyte
from e2e_support import GHOSTLINE, env_for

SCREEN_LINES = 400  # rows kept by the emulator: more than any test writes


def run_on_terminal(*args: str, columns: int, home: Path, timeout: float = 60) -> tuple[int, bytes]:
    """Run `ghostline ARGS` with stdout and stderr on one pseudo-terminal `columns`
    wide (as in a terminal window); return its exit status and every byte it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    try:
        proc = subprocess.Popen(
            [*GHOSTLINE, *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=env_for(home),
            start_new_session=True,
        )
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"ghostline {args[0]} did not end within {timeout} s")
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not data:
                break
            out += data
        return proc.wait(timeout=10), bytes(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def screen_rows(output: bytes, columns: int) -> list[str]:
    """The non-empty rows a terminal `columns` wide shows for `output`."""
    screen = pyte.Screen(columns, SCREEN_LINES)
    pyte.ByteStream(screen).feed(output)
    return [row.rstrip() for row in screen.display if row.strip()]
