"""`ghostline history`: print the local history, choose how long it is kept, clear it.

The setting lives in the member's state database (`Member.set_history_keep`) and is
applied by every process of the member: on opening and with every message. Text output
marks each further line of a message as a continuation (`display.message_lines`).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ..display import message_lines
from ..errors import UsageError
from ..wording.history import describe_keep
from .chatlines import describe_payload, message_head
from .kits import KIT_ARGUMENT, open_member
from .terminal import echo_lines, status

_DAYS = re.compile(r"([1-9][0-9]{0,4})d")
MAX_DAYS = 36500


def parse_keep(text: str) -> int | None:
    """`forever` -> None, `off` -> 0, `30d` -> 30."""
    word = text.strip().lower()
    if word == "forever":
        return None
    if word == "off":
        return 0
    match = _DAYS.fullmatch(word)
    if match is None or int(match.group(1)) > MAX_DAYS:
        raise UsageError(
            f"--keep {text!r}: say forever, off, or a number of days such as 30d "
            f"(at most {MAX_DAYS}d)"
        )
    return int(match.group(1))


def _status(text: str) -> None:
    status(text)


@click.command()
@KIT_ARGUMENT
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the last N.")
@click.option(
    "--keep",
    metavar="forever|Nd|off",
    default=None,
    help="How long to keep history from now on: forever (the default), N days (e.g. "
    "30d), or off. Deletes at once what the new setting does not keep.",
)
@click.option("--clear", is_flag=True, help="Delete the whole history now.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before deleting.")
def history(
    kit: Path, as_json: bool, limit: int | None, keep: str | None, clear: bool, yes: bool
) -> None:
    """Print KIT's local message history: what it received and what it sent.

    The history holds the text of every message (and every file part) in clear on this
    device. --keep chooses how long it is kept; --clear deletes it. Deleted text is
    overwritten in the database; see docs/SECURITY.md for what that cannot reach.
    Parts of a received file are kept until the chat app has saved the file.
    """
    changes = keep is not None or clear
    if changes and (as_json or limit is not None):
        raise UsageError("--keep and --clear change the history and print none of it")
    if yes and not changes:
        raise UsageError("--yes confirms --keep or --clear: give one of them")
    days = parse_keep(keep) if keep is not None else None
    with open_member(kit) as member:
        if not changes:
            _print(member.history(limit), as_json, [m.name for m in member.header.members])
            return
        if keep is not None:
            doomed = member.history_to_delete(days)
            if doomed and not yes:
                click.confirm(
                    f"History will be {describe_keep(days)}. That deletes {doomed} "
                    f"entr{'y' if doomed == 1 else 'ies'} now. Continue?",
                    abort=True,
                    err=True,
                )
            done = member.set_history_keep(days)
            deleted = f"; deleted {done.count} older entries" if done.count else ""
            _status(f"history is {describe_keep(days)}{deleted}")
        if clear:
            if not yes:
                click.confirm(
                    f"Delete the whole history of {kit}? This cannot be undone.",
                    abort=True,
                    err=True,
                )
            done = member.clear_history()
            kept = (
                f"; kept {done.left} parts of received files not saved yet (the chat app "
                "saves them, then they go too)"
                if done.left
                else ""
            )
            _status(f"deleted {done.count} entries from the history{kept}")
        if not done.checkpointed:
            _status(
                "warning: another ghostline process has this kit open: the deleted text "
                "leaves the database's write-ahead log when it closes"
            )


def _print(entries: list[Any], as_json: bool, names: list[str]) -> None:
    from ..errors import PayloadError
    from ..protocol.payload import decode

    for entry in entries:
        try:
            obj: Any = decode(entry.payload)
        except PayloadError:
            obj = None
        fields, shown = describe_payload(obj, names, refused=entry.grant_refused)
        sent_at = getattr(obj, "sent_at", None)
        if as_json:
            record = {
                "sender": entry.sender_name,
                "sender_index": entry.sender,
                "counter": entry.counter,
                "seq": entry.seq,
                "sent_at": sent_at,
                "state": entry.state,
                **fields,
            }
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        when = datetime.fromtimestamp(sent_at or entry.recorded_at).strftime("%Y-%m-%d %H:%M:%S")
        mark = {"sealed": " (not yet sent)"}.get(entry.state, "")
        echo_lines(message_lines(message_head(when, entry.sender_name, fields), shown, mark))
