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

Everything else, any printable character of any script, is shown as it is. What this
does not stop: a name or a text that merely looks like another (homoglyphs, a member
who picked a misleading name when the kit was made); see docs/SECURITY.md.
"""

from __future__ import annotations

import re

TAB = "    "
# What starts every continuation line of a message in line-oriented output. It starts
# with a space, and a message's first line never does (see `message_lines`), so the
# first character of a line says which of the two it is.
CONTINUATION = "  | "

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
