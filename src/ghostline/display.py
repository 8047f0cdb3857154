"""Text from other people, made safe to put on a screen. Pure: no I/O.

Everything another member controls (message text, member and group names, file names,
reasons quoted from the network) goes through here before a terminal, the chat app or
the web page shows it. The rule is one and the same everywhere:

- C0 controls (U+0000-U+001F, U+007F) and C1 controls (U+0080-U+009F) are shown as
  visible escapes (`\\x1b`, `\\r`, `\\x85`), never passed to the terminal. So no escape
  sequence (ESC, CSI, OSC) can clear the screen, move the cursor, set the title or
  colour the text.
- Bidi overrides and isolates (U+202A-U+202E, U+2066-U+2069) are shown as `\\u202e`:
  they could make text read in another order than it was written.
- Line and paragraph separators (U+2028, U+2029) are shown escaped: some screens start
  a new line on them, which would let one message draw a line that looks like another.
- Newline is kept only in message bodies, and only through `body_lines`, which hands
  the lines back separately so that the caller marks every continuation line as one
  (`message_lines` does it for line-oriented output: `listen`, `history`).
- A tab becomes four spaces (readable, and it cannot move the cursor elsewhere).
- On a terminal, GhostLine wraps every line itself (`fit`), each row after the first
  starting with CONTINUATION: left to the terminal, a long line would wrap into a row
  that starts with whatever text the sender put there, such as `[12:00:00] alice:`.
  Widths are counted in terminal cells (wcwidth), wide characters and emoji as two,
  combining marks as none, and where terminals disagree (emoji sequences) the widest
  count is taken.
- Text quoted in a status line is cut to a length (`quote`): a relay's ERROR reason can
  be a megabyte.
- A very long message is folded where it arrives (`fold`: `listen`, the chat app, the
  web page): its first FOLD_LINES lines or FOLD_CHARS characters, and a note of how much
  more there is. A message of 100,000 empty lines would otherwise freeze the chat app
  for a minute and push everything else off a terminal. `history` and `--json` show the
  whole text.

Everything else, any printable character of any script, is shown as it is. What this
does not stop: a name or a text that merely looks like another (homoglyphs, a member
who picked a misleading name when the kit was made); see docs/SECURITY.md.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import wcwidth

TAB = "    "
# What starts every continuation line of a message in line-oriented output. It starts
# with a space, and a message's first line never does (see `message_lines`), so the
# first character of a line says which of the two it is.
CONTINUATION = "  | "
# The narrowest row `fit` makes: below it, every row would be mostly marker.
MIN_WIDTH = len(CONTINUATION) + 8
# Characters of someone else's text quoted in one status line (names, relay reasons).
QUOTE_LIMIT = 200
# How much of a message is shown before it is folded (see `fold`).
FOLD_LINES = 40
FOLD_CHARS = 4000
# In a grapheme, these make an emoji or a keycap: two cells on most terminals.
_EMOJI_MARKS = frozenset("\ufe0f\u20e3\u200d")
# A grapheme wider than this is cut between its characters (see `_units`).
_MAX_UNIT = MIN_WIDTH - len(CONTINUATION)

# Characters that are never shown as themselves (see the module docstring).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\t": TAB, "\r": "\\r", "\n": "\\n"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def one_line(text: str) -> str:
    """`text` on one line with nothing interpreted: for names, file names, reasons.

    A newline becomes a visible `\\n`, so a name can never start a line of its own.
    """
    return _UNSAFE.sub(_escape, text)


def body_lines(text: str) -> list[str]:
    """The lines of a message body, each made safe as by `one_line`.

    Only U+000A separates lines (a `\\r` shows as `\\r`). Callers show the first line
    after the sender's name and mark every later line as a continuation, so that no
    line of one message can pass for the start of another.
    """
    return [one_line(line) for line in text.split("\n")]


def is_clean(text: str) -> bool:
    """True when `one_line(text)` would show `text` unchanged."""
    return _UNSAFE.search(text) is None


def message_lines(head: str, body: str, tail: str = "") -> list[str]:
    """A message as lines of terminal output: `head` then the body's first line, then
    every later line of the body after CONTINUATION; `tail` ends the last line.

    `head` is the caller's own text (a time and a name already passed through
    `one_line`) and must start with a character other than a space: then every line
    of one message that is not its first starts with CONTINUATION, so no text inside a
    message can produce a line that reads as the start of another message.
    """
    if not head or head[0].isspace() or not is_clean(head):
        raise ValueError("a message's head is one clean line that does not start with a space")
    lines = body_lines(body)
    out = [head + lines[0]] + [CONTINUATION + line for line in lines[1:]]
    out[-1] += tail
    return out


@dataclass(frozen=True, slots=True)
class Folded:
    """The start of a message that is shown, and what is left out of it."""

    shown: str
    more_lines: int  # lines left out (after the last one shown, even in part)
    more_chars: int  # characters left out

    @property
    def folded(self) -> bool:
        return self.more_chars > 0

    def more(self) -> str:
        """What is left out, in words: `1,234 more lines` (or characters, for a part of
        one long line)."""
        if self.more_lines:
            return f"{self.more_lines:,} more line{'s' if self.more_lines != 1 else ''}"
        return f"{self.more_chars:,} more character{'s' if self.more_chars != 1 else ''}"


def fold(text: str, lines: int = FOLD_LINES, chars: int = FOLD_CHARS) -> Folded:
    """The first `lines` lines of `text`, and at most its first `chars` characters."""
    end = min(len(text), chars)
    cut = -1
    for _ in range(lines):
        cut = text.find("\n", cut + 1, end)
        if cut < 0:
            break
    else:
        end = cut  # the newline after the last line shown is left out with the rest
    rest = text[end:]
    # Each newline left out starts a line that is not shown at all.
    return Folded(text[:end], rest.count("\n"), len(rest))


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`one_line(text)` for a status line, cut after `limit` characters of `text` with
    a note of how many more there were."""
    if len(text) <= limit:
        return one_line(text)
    return f"{one_line(text[:limit])}… ({len(text) - limit} more characters)"


def cells(text: str) -> int:
    """How many terminal cells `text` (a clean line) takes, counted as `fit` counts."""
    return sum(size for _, _, size in _units(text))


def _char_cells(ch: str) -> int:
    """Cells of one character drawn alone (wcwidth, as terminals count): a zero-width
    character that is not a combining mark (a joiner, a format character) counts 1, for
    terminals that draw a box for it."""
    size = wcwidth.wcwidth(ch)
    if size <= 0 and unicodedata.category(ch) not in ("Mn", "Me"):
        return 1
    return max(size, 0)


def _units(text: str) -> list[tuple[int, int, int]]:
    """(start, end, cells) of the pieces `fit` never cuts: grapheme clusters (UAX #29),
    or the characters of a cluster too wide for any row.

    A cluster counts the most cells a common terminal may give it: the larger of its
    width as one glyph and the sum of its characters drawn apart (terminals disagree on
    emoji sequences: a family, a skin tone, a flag), and at least 2 when it holds
    U+FE0F, U+20E3 or a joiner (an emoji, a keycap). Counting too many cells only ends
    a row early; too few would leave the terminal to wrap it."""
    if text.isascii():  # a clean line: printable ASCII, one cell per character
        return [(i, i + 1, 1) for i in range(len(text))]
    units: list[tuple[int, int, int]] = []
    start = 0
    for cluster in wcwidth.iter_graphemes(text):
        end = start + len(cluster)
        size = max(wcwidth.wcswidth(cluster), sum(_char_cells(c) for c in cluster))
        if len(cluster) > 1 and not _EMOJI_MARKS.isdisjoint(cluster):
            size = max(size, 2)
        if size <= _MAX_UNIT:
            units.append((start, end, size))
        else:
            units.extend((i, i + 1, _char_cells(text[i])) for i in range(start, end))
        start = end
    return units


def fit(line: str, width: int | None) -> list[str]:
    """`line` (one clean line) as rows of at most `width` terminal cells: the first row
    as it starts, every further row after CONTINUATION, so that no row but the first
    starts with the line's own text. A row ends after its last space if that leaves it
    at least half full (words stay whole), else where it is full. With `width` None (not
    a terminal: a pipe or a file) the line stays whole. A width below MIN_WIDTH counts
    as MIN_WIDTH."""
    if not is_clean(line):
        raise ValueError("only a clean line can be fitted to a terminal")
    if width is None or (line.isascii() and len(line) <= width):
        return [line]
    width = max(width, MIN_WIDTH)
    units = _units(line)
    rows: list[str] = []
    first = used = 0  # the row's first unit, and the cells it has so far
    room = width
    after_space = 0  # the unit after the row's last space (0: none yet)
    at_space = 0  # the cells of the row up to there
    i = 0
    while i < len(units):
        start, end, size = units[i]
        if used + size > room and i > first:
            cut = after_space if after_space > first and 2 * at_space >= room else i
            rows.append(line[units[first][0] : units[cut][0]])
            first, used, room, i = cut, 0, width - len(CONTINUATION), cut
            continue  # measure the units after the cut again, on the new row
        used += size
        i += 1
        if line[start:end] == " ":
            after_space, at_space = i, used
    rows.append(line[units[first][0] :] if units else line)
    return rows[:1] + [CONTINUATION + row for row in rows[1:]]


def fit_lines(lines: list[str], width: int | None) -> list[str]:
    """Every line of `lines` fitted to `width` (see `fit`)."""
    return [row for line in lines for row in fit(line, width)]
