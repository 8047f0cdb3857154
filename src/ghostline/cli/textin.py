"""The text `ghostline send` seals: TEXT's words or stdin, and only UTF-8.

Text that is not UTF-8 is refused before anything is sealed, never sent altered."""

from __future__ import annotations

import sys

from ..errors import UsageError


def message_text(text: tuple[str, ...]) -> str:
    """The one message to send: TEXT's words, or all of stdin for `-` (less one final
    newline). UsageError for text that is empty or not UTF-8."""
    if text == ("-",):
        message = utf8_text(sys.stdin.buffer.read(), "the message on stdin")
        if message.endswith("\n"):
            message = message[:-1]
    else:
        message = " ".join(text)
        try:
            message.encode("utf-8")
        except UnicodeEncodeError as exc:
            # Python hands undecodable argument bytes over as U+DC80..U+DCFF.
            code = ord(message[exc.start])
            what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
            raise UsageError(
                f"the message is not UTF-8 text ({what} at character {exc.start + 1}); "
                "nothing was sealed",
                hint=NOT_TEXT_HINT,
            ) from None
    if not message:
        raise UsageError("nothing to send: the message is empty")
    return message


TOO_LARGE_HINT = "split it into several lines, or send it as a file with /file in `ghostline chat`."
NOT_TEXT_HINT = (
    "GhostLine sends text as UTF-8: convert it first (e.g. `iconv -f LATIN1 -t UTF-8`), "
    "or send the bytes as a file with /file in `ghostline chat`."
)


def utf8_text(raw: bytes, what: str) -> str:
    """`raw` decoded; UsageError naming `what` when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(not_utf8(raw, what, "nothing was sealed"), hint=NOT_TEXT_HINT) from None


def not_utf8(raw: bytes, what: str, consequence: str) -> str:
    """The error line for `raw` (which is not UTF-8), and what came of it."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    else:
        raise ValueError("this is UTF-8 text")
    return f"{what} is not UTF-8 text ({where}); {consequence}"
