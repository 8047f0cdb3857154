"""What the page shows, as JSON-ready dicts: message lines, pads, members. Pure.

Every string another member controls (message text, names, file names, reasons the
relay quotes) goes through `ghostline.display` here, on the server: the page then
inserts each string as text (`textContent`), never as HTML, and marks every line of
`lines` after the first as a continuation. A very long text comes folded
(`display.fold`): its start, and in `more` what is left out, which the page fetches
only when the person asks for it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from ..display import body_lines, fold, one_line
from ..protocol.payload import FileChunk, FileHeader, GrantPayload, Payload, TextPayload
from ..state.usage import PadLeft
from ..wording.filelines import file_text
from ..wording.padleft import pad_summary, pad_warning, percent
from ..wording.padtalk import failed_checks, gift_text

LineKind = Literal["message", "notice", "warning"]
OwnState = Literal["sealed", "sending", "stored"]


_MESSAGE_ID = re.compile(r"m([0-9]{1,3})-([0-9]{1,20})")


def message_id(sender: int, counter: int) -> str:
    """A message's id on the page: (sender, counter) names one message for good."""
    return f"m{sender}-{counter}"


def message_key(ident: str) -> tuple[int, int] | None:
    """The (sender, counter) of a `message_id`, or None for anything else."""
    match = _MESSAGE_ID.fullmatch(ident)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def line(
    kind: LineKind,
    timestamp: float,
    text: str,
    *,
    ident: str,
    sender: int = -1,
    name: str = "",
    own: bool = False,
    state: OwnState | None = None,
    whole: bool = False,
) -> dict[str, Any]:
    """One entry of the conversation. `text` is shown line by line, folded when very
    long unless `whole` (see the module docstring); `name` must already be safe
    (`one_line`)."""
    folded = fold(text)
    if whole or not folded.folded:
        lines, more = body_lines(text), None
    else:
        lines, more = body_lines(folded.shown), folded.more()
    return {
        "id": ident,
        "kind": kind,
        "time": timestamp,
        "sender": sender,
        "name": name,
        "own": own,
        "lines": lines,
        "more": more,
        "state": state,
    }


def payload_text(obj: Payload, *, own: bool, unfinished: str | None = None) -> str | None:
    """What a message says in the conversation; None for file chunks (shown as
    progress, not as lines) and grants (`grant_line`). `unfinished`: the text for an
    own file whose parts were not all sealed."""
    if isinstance(obj, TextPayload):
        return obj.text
    if isinstance(obj, FileChunk | GrantPayload):
        return None
    if isinstance(obj, FileHeader):
        return unfinished or file_text(obj, own=own)
    return "a message of a kind this version cannot show"


def grant_line(
    names: list[str],
    me: int,
    giver: int,
    grant: GrantPayload,
    timestamp: float,
    *,
    ident: str,
    refused: str | None = None,
) -> dict[str, Any]:
    """A grant's line: "alice gave bob 96 KiB of pad", a notice (a warning when this kit
    refused the grant). The member list shows the pad it moved (`members_view`)."""
    kind, text = gift_text(names, me, giver, grant, refused)
    return line(kind, timestamp, text, ident=ident)


def pad_view(pad: PadLeft) -> dict[str, Any]:
    """A member's pad for the gauge and the member list."""
    return {
        "level": pad.level,
        "fraction": pad.fraction_left,
        "percent": percent(pad.fraction_left),
        "summary": pad_summary(pad),
        "warning": pad_warning(pad),
    }


def members_view(
    names: list[str],
    me: int,
    pads: dict[int, PadLeft],
    online: frozenset[int],
    presence_known: bool,
    failed: dict[int, int] | None = None,
) -> dict[str, Any]:
    """Every member's row: online, pad (format 2: of its current extents), and the
    count of its messages that failed their check here, when any did."""
    failed = failed or {}
    rows = []
    for index, name in enumerate(names):
        pad = pads.get(index)
        rows.append(
            {
                "index": index,
                "name": name,
                "you": index == me,
                "online": True if index == me else (index in online if presence_known else None),
                "pad": pad_view(pad) if pad is not None else None,
                "failed": failed_checks(failed[index]) if failed.get(index) else None,
            }
        )
    own = pads.get(me)
    return {
        "type": "members",
        "members": rows,
        "presence_known": presence_known,
        "pad": pad_view(own) if own is not None else None,
    }


def safe(text: str) -> str:
    """A reason, relay address or other one-line text from outside, made safe."""
    return one_line(text)
