"""Lines to stdout and stderr, wrapped by GhostLine when they go to a terminal.

A terminal wraps a line longer than its width into a row of its own, and that row
starts with whatever text came there: a message padded with spaces could draw a row
that reads `[12:00:00] alice: ...`. So on a terminal every line is cut to the width
it has now (asked of the very stream written to, for every write: the window may have
been resized) and every further row starts with `display.CONTINUATION`
(`display.fit`). A pipe or a file gets each line whole: programs should read
`--json`, not this text.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TextIO

import click

from ..display import fit_lines, quote

# What a terminal that will not say its size is taken to be.
FALLBACK_WIDTH = 80
# The longest status line written, remote text included (local text is far shorter).
STATUS_LIMIT = 1000


def width_of(stream: TextIO) -> int | None:
    """The width of the terminal `stream` writes to, or None when it is no terminal."""
    try:
        if not stream.isatty():
            return None
        return os.get_terminal_size(stream.fileno()).columns or FALLBACK_WIDTH
    except (AttributeError, ValueError, OSError):
        # A stream without a descriptor (a test's capture) is no terminal; a terminal
        # that does not answer gets the usual width.
        return FALLBACK_WIDTH if _isatty(stream) else None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def echo_lines(lines: Iterable[str], *, err: bool = False) -> None:
    """Write clean lines (display.one_line, display.message_lines) to stdout or stderr,
    fitted to the terminal's width when it is one."""
    rows = fit_lines(list(lines), width_of(sys.stderr if err else sys.stdout))
    click.echo("\n".join(rows), err=err)


def status(text: str, prefix: str = "ghostline: ") -> None:
    """A status line on stderr: `text` made one line (whatever it quotes), at most
    STATUS_LIMIT characters, fitted to the terminal."""
    echo_lines([prefix + quote(text, STATUS_LIMIT)], err=True)
