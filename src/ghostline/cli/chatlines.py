"""How a message reads on the command line, shared by `listen` (as it arrives) and
`history` (from the history): the JSON fields and the one-line human form of a
payload, the `[time] name: ` before it, and the fold of a very long one. In text
output each further line of a message starts with `display.CONTINUATION`, so no
message can print a line that passes for another's; everything another member wrote
goes through `ghostline.display`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..display import CONTINUATION, fold, message_lines, one_line, quote
from ..wording.padtalk import gift_predicate


def describe_payload(
    obj: Any, names: Sequence[str] = (), *, refused: str | None = None
) -> tuple[dict[str, Any], str]:
    """The JSON fields (kind, text, file details, grant) and the one-line human form of
    a decoded payload; `obj` is None for one this version cannot decode. A grant's human
    form follows the giver's name (`gave bob 96 KiB of pad`); `names` are the roster's,
    `refused` the rule a grant broke here."""
    from ..files.names import safe_file_name
    from ..protocol.payload import FileChunk, FileHeader, GrantPayload, TextPayload

    if isinstance(obj, GrantPayload):
        to = quote(names[obj.to]) if obj.to < len(names) else f"member {obj.to}"
        fields = {
            "kind": "grant", "text": None, "to": to if obj.to < len(names) else None,
            "to_index": obj.to, "start": obj.start, "end": obj.end,
            "size": max(0, obj.end - obj.start), "refused": refused,
        }  # fmt: skip
        human = gift_predicate(to, max(0, obj.end - obj.start), refused)
        return fields, human
    if isinstance(obj, TextPayload):
        return {"kind": "text", "text": obj.text}, obj.text
    if isinstance(obj, FileHeader):
        name = safe_file_name(obj.name)
        fields = {"kind": "file", "text": None, "file": name, "size": obj.total_size}
        shown = repr(one_line(name))
        human = f"[file {shown}, {obj.total_size} bytes, {obj.chunk_count} chunks]"
        return fields, human
    if isinstance(obj, FileChunk):
        return {"kind": "file_chunk", "text": None, "chunk": obj.index}, (
            f"[file chunk {obj.index}]"
        )
    return {"kind": "unknown", "text": None}, "[a message of a kind this version cannot show]"


def message_head(when: str, sender_name: str, fields: dict[str, Any]) -> str:
    """`[time] name: ` before a message; `[time] name ` before a grant, whose human form
    goes on from the name ("alice gave bob 96 KiB of pad")."""
    return f"[{when}] {quote(sender_name)}" + (" " if fields["kind"] == "grant" else ": ")


def folded_lines(head: str, text: str) -> list[str]:
    """`display.message_lines` for a message shown as it arrives: a very long one is
    folded (`display.fold`), with a line that says how much more there is."""
    folded = fold(text)
    lines = message_lines(head, folded.shown)
    if folded.folded:
        lines.append(
            f"{CONTINUATION}… ({folded.more()} not shown: `ghostline history` or `listen "
            "--json` shows the whole message)"
        )
    return lines
