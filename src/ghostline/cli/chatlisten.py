"""`ghostline listen`: print a kit's messages as they arrive, catching up first.

Messages go to stdout (`--json` for one JSON object per line, `chatlines.py` for the
text form); status, presence and rejected messages go to stderr, prefixed
`ghostline:`, a line said less than a minute ago left out. Everything another member
or the relay wrote goes through `ghostline.display`. Every failure is a
`GhostlineError`, which `cli.main` prints as one line (and a hint) with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..display import quote
from ..errors import RelayUnreachable
from ..presencenotes import PresenceNote, PresenceNotes
from ..wording.hints import failure_hint
from ..wording.padtalk import gift_sentence, rejection_note
from ..wording.presence import presence_note_text
from ..wording.relaylines import messages_missing_line, relay_failing_line, store_changed_line
from ..wording.repeats import Repeats
from .chatlines import describe_payload, folded_lines, message_head
from .connect import (
    ConnectionSettings,
    auto_give_option,
    connection_options,
    connection_settings,
    make_client,
)
from .kits import KIT_ARGUMENT, open_member
from .padwarn import PadWarnings
from .params import seconds
from .relaystatus import with_hint
from .terminal import echo_lines, status

if TYPE_CHECKING:
    from ..client import ConnectionChanged, Event
    from ..state.member import Member


def connection_key(ev: ConnectionChanged) -> str:
    """What a connection line says, but for the wait before the next try (`Repeats`)."""
    return f"{ev.channel} {ev.state} {ev.relay} {ev.detail}"


def connection_line(ev: ConnectionChanged) -> str | None:
    if ev.channel == "presence":
        # Presence is optional: only worth a line while messaging itself works.
        if ev.retry_in is not None and ev.state == "connected":
            return f"{quote(ev.detail)} (retrying in {ev.retry_in:.1f} s)"
        return None
    # The detail can quote the relay (an ERROR reason): shown, never interpreted.
    detail = quote(ev.detail)
    if ev.state == "connected":
        return f"connected to {ev.relay}: {detail}"
    if ev.state == "reconnecting" and ev.retry_in is not None:
        return f"{detail}; reconnecting to {ev.relay} in {ev.retry_in:.1f} s"
    return None


@click.command()
@KIT_ARGUMENT
@connection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message on stdout.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N messages.")
@click.option("--timeout", type=seconds(), default=None, help="Stop after S seconds.")
@click.option("-q", "--quiet", is_flag=True, help="No connection status on stderr.")
@auto_give_option
def listen(
    kit: Path,
    as_json: bool,
    count: int | None,
    timeout: float | None,
    quiet: bool,
    no_auto_give: bool,
    **opts: Any,
) -> None:
    """Print KIT's messages as they arrive (catching up first on what was missed).

    Rejected messages are reported on stderr with the rule they broke, and listening
    goes on. Messages still in the outbox are sent too.
    """
    settings = connection_settings(opts)
    with open_member(kit) as member:
        asyncio.run(_listen(member, settings, as_json, count, timeout, quiet, not no_auto_give))


async def _listen(
    member: Member,
    settings: ConnectionSettings,
    as_json: bool,
    count: int | None,
    timeout: float | None,
    quiet: bool,
    auto_give: bool = True,
) -> None:
    from ..client import (
        ConnectionChanged,
        MessageAccepted,
        MessageReceived,
        MessageRejected,
        MessagesMissing,
        PadExhausted,
        PadGiven,
        PadLow,
        PresenceChanged,
        RelayFailing,
        StoreChanged,
    )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout is not None else None
    names = [m.name for m in member.header.members]
    warnings = PadWarnings()
    warnings.check(member.own_pad())  # listening is when a person looks: say it at once
    client = make_client(member, settings, presence=True, receive_limit=count, auto_give=auto_give)
    lines = _ListenLines(names, quiet, loop.time)
    shown = 0
    await client.start()
    try:
        while count is None or shown < count:
            now = loop.time()
            remaining = None if deadline is None else deadline - now
            if remaining is not None and remaining <= 0:
                break
            wait, due = remaining, lines.presence.next_due()  # a held presence note
            if due is not None:
                wait = max(0.0, due - now if wait is None else min(wait, due - now))
            try:
                async with asyncio.timeout(wait):
                    event: Event = await client.events.get()
            except TimeoutError:
                lines.presence_due()
                continue
            if isinstance(event, MessageReceived):
                shown += 1
                lines.repeats.useful()
                _print_message(event, names, as_json)
            elif isinstance(event, MessageRejected):
                note = rejection_note(event.rule)
                lines.status(
                    f"rejected message seq {event.seq} ({quote(event.rule)}): {quote(event.reason)}"
                    + (f". {note}" if note else "")
                )
            elif isinstance(event, PadGiven):
                if not quiet:
                    to = quote(names[event.grant.to])
                    status(f"{gift_sentence('you', to, event.grant.end - event.grant.start)}"
                            f" (automatically: {to} was running low)")  # fmt: skip
            elif isinstance(event, PresenceChanged):
                lines.presence_changed(event)
            elif isinstance(event, MessagesMissing):
                status(messages_missing_line(event))
            elif isinstance(event, StoreChanged):
                if not quiet:
                    lines.status(store_changed_line(event))
            elif isinstance(event, RelayFailing):
                status(relay_failing_line(event))
            elif isinstance(event, ConnectionChanged):
                if event.state == "stopped" and client.failure is not None:
                    raise with_hint(client.failure)
                line = connection_line(event)
                if line and not quiet:
                    lines.status(line, connection_key(event))
            elif isinstance(event, MessageAccepted):
                lines.repeats.useful()
                if not quiet:
                    status(f"sent: message {event.counter} accepted as seq {event.seq}")
            elif isinstance(event, PadLow | PadExhausted):
                warnings.check(member.own_pad())
    finally:
        await client.stop()
    if not client.ever_connected:
        detail = f": {client.last_error.message}" if client.last_error else ""
        hint = failure_hint(client.last_error) if client.last_error else None
        raise RelayUnreachable(f"could not reach the relay{detail}", hint=hint)


def _print_message(event: Any, names: list[str], as_json: bool) -> None:
    rec = event.received
    obj = event.payload_obj
    fields, human = describe_payload(obj, names, refused=rec.grant_refused)
    record: dict[str, Any] = {
        "sender": rec.sender_name,
        "sender_index": rec.sender,
        "counter": rec.counter,
        "seq": rec.seq,
        "sent_at": getattr(obj, "sent_at", None),
        **fields,
    }
    if as_json:
        click.echo(json.dumps(record, ensure_ascii=False))
    else:
        when = datetime.fromtimestamp(record["sent_at"] or time.time()).strftime("%H:%M:%S")
        echo_lines(folded_lines(message_head(when, rec.sender_name, fields), human))
    sys.stdout.flush()


class _ListenLines:
    """`listen`'s status lines on stderr: a line that says what one said less than a
    minute ago is left out (`Repeats`: a relay failing every connection the same way
    fills no screen), and presence changes are told as `presencenotes` allows (a member
    coming and going in a loop does not either)."""

    def __init__(self, names: list[str], quiet: bool, clock: Callable[[], float]) -> None:
        self.names = names
        self.quiet = quiet
        self.clock = clock
        self.repeats = Repeats(clock)
        self.presence = PresenceNotes()

    def status(self, text: str, key: str | None = None) -> None:
        line = self.repeats.line(text if key is None else key, text)
        if line is not None:
            status(line)

    def presence_changed(self, event: Any) -> None:
        now = self.clock()
        if event.joined and len(event.joined) == len(event.online) and not event.left:
            # The list after (re)connecting: who is online already, nobody just arrived.
            if not self.quiet:
                self.status(f"online now: {self._who(event.online) or 'nobody'}")
            return
        for note in self.presence.changed(event.joined, event.left, now):
            self._tell(note)

    def presence_due(self) -> None:
        for note in self.presence.due(self.clock()):
            self._tell(note)

    def _tell(self, note: PresenceNote) -> None:
        if not self.quiet:
            status(presence_note_text(note, self._who([note.member])))

    def _who(self, indexes: Iterable[int]) -> str:
        names = self.names
        return ", ".join(quote(names[i]) if i < len(names) else f"#{i}" for i in sorted(indexes))
