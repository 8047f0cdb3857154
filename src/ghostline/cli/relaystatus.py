"""What `send` and `listen` say about the relay connection that the other front ends do
not: a failure's hint put on the error itself (`with_hint`), and the line `send` prints
while the relay has not taken a message yet. What the chat app and the web page say too
lives in `ghostline.wording` (`hints`, `relaylines`, `presence`, `repeats`)."""

from __future__ import annotations

from ..errors import GhostlineError
from ..wording.hints import failure_hint


def with_hint(err: GhostlineError) -> GhostlineError:
    """`err`, with the hint `failure_hint` has for it (if any)."""
    hint = failure_hint(err)
    if hint is not None:
        err.hint = hint
    return err


def retry_line(detail: str, timeout: float) -> str:
    """The one line `send` prints when the relay has not taken the message yet."""
    return (
        f"the relay has not accepted the message yet ({detail}); retrying for up to "
        f"{timeout:g} s. Ctrl-C stops: the message stays sealed in the outbox and goes out "
        "with the next `ghostline send` or `listen`."
    )
