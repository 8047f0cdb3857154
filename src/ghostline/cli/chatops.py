"""`ghostline send` and `listen`: chat from the command line (`history` is in
`cli/history.py`).

Messages go to stdout (`--json` for one JSON object per line); status, presence and
rejected messages go to stderr, prefixed `ghostline:`. In text output a message starts
with `[time] name: ` and each further line of its text starts with
`display.CONTINUATION`, so no message can print a line that passes for another's;
everything another member or the relay wrote goes through `ghostline.display`. Every failure is a
`GhostlineError`, which `cli.main` prints as one line (and a hint) with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..display import CONTINUATION, fold, message_lines, one_line, quote
from ..errors import GhostlineError, LocalError, RelayUnreachable, UsageError
from ..presencenotes import PresenceNote, PresenceNotes
from .connect import ConnectionSettings, connection_options, connection_settings, make_client
from .kits import KIT_ARGUMENT, open_member
from .padwarn import PadWarnings
from .params import Number, seconds
from .relaystatus import (
    Repeats,
    failure_hint,
    messages_missing_line,
    presence_note_text,
    relay_failing_line,
    retry_line,
    store_changed_line,
    with_hint,
)
from .terminal import echo_lines, status
from .textin import NOT_TEXT_HINT, TOO_LARGE_HINT, message_text, not_utf8

if TYPE_CHECKING:
    from ..client import Client, ConnectionChanged, Event
    from ..state.member import Member

_OUTBOX_HINT = (
    "Check the --relay address and that the relay is running. The message is sealed and "
    "kept in the outbox: the next `ghostline send` or `listen` sends it."
)
_OUTBOX_NOTE = "The message is sealed and kept in the outbox: the next `send` or `listen` sends it."
# `send` says it is retrying only when the relay has not taken the message this long
# after a failed attempt: a quick success prints nothing.
RETRY_NOTICE_DELAY = 2.0


def _status(text: str) -> None:
    status(text)


def _connection_key(ev: ConnectionChanged) -> str:
    """What a connection line says, but for the wait before the next try (`Repeats`)."""
    return f"{ev.channel} {ev.state} {ev.relay} {ev.detail}"


def _connection_line(ev: ConnectionChanged) -> str | None:
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


# --- send ------------------------------------------------------------------------


@click.command()
@KIT_ARGUMENT
@click.argument("text", nargs=-1)
@connection_options
@click.option(
    "--timeout",
    type=Number(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the relay to accept everything.",
)
@click.option(
    "--lines",
    is_flag=True,
    help="With TEXT `-`: send every line of stdin as its own message, as it is read.",
)
@click.option(
    "--flush", is_flag=True, help="Seal nothing new: only send what the outbox still holds."
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing when all goes well.")
def send(
    kit: Path,
    text: tuple[str, ...],
    timeout: float,
    lines: bool,
    flush: bool,
    quiet: bool,
    **opts: Any,
) -> None:
    """Seal TEXT with KIT and send it; exit 0 once the relay has accepted it.

    TEXT `-` reads the message from stdin. The message is sealed and stored durably
    before anything is sent; if the relay cannot be reached it stays in the outbox and
    goes out with the next `send` or `listen`, byte for byte the same. Text must be
    UTF-8. Exit status 2 (a usage error) means nothing was sealed.
    """
    if flush and text:
        raise UsageError("--flush sends the outbox only: give no TEXT")
    if not flush and not text:
        raise UsageError("nothing to send: give TEXT, or - to read it from stdin")
    if lines and text != ("-",):
        raise UsageError("--lines reads stdin: give TEXT as -")
    # Everything that can be wrong with the command line is found before the kit opens.
    settings = connection_settings(opts)
    message = message_text(text) if text and not lines else None
    with open_member(kit) as member:
        asyncio.run(_send(member, settings, message, timeout, lines, quiet))


async def _send(
    member: Member,
    settings: ConnectionSettings,
    message: str | None,
    timeout: float,
    lines: bool,
    quiet: bool,
) -> None:
    from ..protocol.payload import encode_text

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    warnings = PadWarnings(member.own_pad().level)
    if message is not None:
        # Sealed (and the pad checked) before any connection: exhaustion consumes nothing.
        member.seal(encode_text(message, int(time.time())))
        warnings.check(member.own_pad())
    client = make_client(member, settings, presence=False, receive=False)
    await client.start()
    watch = asyncio.ensure_future(_watch_send(client, timeout))
    stopped_by: BaseException | None = None
    sent = 0
    try:
        if lines:
            sent, stopped_by = await _send_lines(client, warnings)
            deadline = loop.time() + timeout
        counters = await client.pending_counters()
        for counter in counters:
            seq = await _accepted(client, counter, deadline)
            if seq is None:
                raise _send_timeout(client, timeout, len(counters))
            if not quiet and not lines:
                _status(f"sent: message {counter} accepted by the relay as seq {seq}")
        if not quiet and lines:
            _status(f"sent: {_plural(sent, 'message')} accepted by the relay")
    except GhostlineError as err:
        raise with_hint(err) from None
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await client.stop()
    if stopped_by is not None:
        raise stopped_by


async def _watch_send(client: Client, timeout: float) -> None:
    """While `send` waits: once a connection attempt has failed and the message is still
    not accepted RETRY_NOTICE_DELAY seconds after the start, say so (once), and say when
    the relay keeps failing."""
    from ..client import ConnectionChanged, RelayFailing

    loop = asyncio.get_running_loop()
    notice_at = loop.time() + RETRY_NOTICE_DELAY
    failed: str | None = None
    while True:
        wait = None if failed is None else max(0.0, notice_at - loop.time())
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
        # races with a queued event, and then `send` never exits.
        try:
            async with asyncio.timeout(wait):
                event = await client.events.get()
        except TimeoutError:
            _status(retry_line(failed or "", timeout))
            notice_at = float("inf")
            failed = None
            continue
        if isinstance(event, RelayFailing):
            _status(relay_failing_line(event))
        elif (
            isinstance(event, ConnectionChanged)
            and event.channel == "relay"
            and event.retry_in is not None
            and notice_at != float("inf")
        ):
            failed = event.detail


async def _accepted(client: Client, counter: int, deadline: float) -> int | None:
    """The seq the relay gave `counter`, or None at the deadline. Another process of the
    same member (a running `listen`) may get the ACCEPTED first: then the outbox says so."""
    loop = asyncio.get_running_loop()
    while (remaining := deadline - loop.time()) > 0:
        try:
            return await client.wait_accepted(counter, min(remaining, 0.5))
        except TimeoutError:
            if counter not in await client.pending_counters():
                return await client.accepted_seq(counter) or 0
    return None


async def _send_lines(client: Client, warnings: PadWarnings) -> tuple[int, BaseException | None]:
    """Seal and queue each stdin line as it comes. Returns how many were sealed, and the
    error that stopped it early, if one did: PadExhaustedError, or a line that is not
    UTF-8 (never sent altered; it and what follows stay unsent)."""
    from ..errors import PadExhaustedError

    loop = asyncio.get_running_loop()
    sealed = 0
    number = 0
    while True:
        raw = await loop.run_in_executor(None, sys.stdin.buffer.readline)
        if not raw:
            return sealed, None
        number += 1
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            problem = not_utf8(
                raw, f"line {number} of stdin", "it and the lines after it were not sealed"
            )
            # Exit status 2 says that nothing was sealed: true only for the first line.
            error = LocalError if sealed else UsageError
            return sealed, error(problem, hint=NOT_TEXT_HINT)
        if not line:
            continue
        try:
            await client.send_text(line)
        except PadExhaustedError as err:
            return sealed, err
        except UsageError:  # a line too large for any relay message: it was not sealed
            problem = (
                f"line {number} of stdin is too large for one message; it and the lines "
                "after it were not sealed"
            )
            error = LocalError if sealed else UsageError  # 2 only when nothing was sealed
            return sealed, error(problem, hint=TOO_LARGE_HINT)
        sealed += 1
        warnings.check(client.member.own_pad())


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _send_timeout(client: Client, timeout: float, count: int) -> Exception:
    if client.failure is not None:
        return client.failure
    if not client.ever_connected:
        detail = f": {client.last_error.message}" if client.last_error else ""
        hint = failure_hint(client.last_error) if client.last_error else None
        return RelayUnreachable(
            f"could not reach the relay within {timeout:g} s{detail}",
            hint=f"{hint} {_OUTBOX_NOTE}" if hint else _OUTBOX_HINT,
        )
    what = "the message" if count == 1 else f"{count} messages"
    return RelayUnreachable(
        f"the relay did not accept {what} within {timeout:g} s", hint=_OUTBOX_HINT
    )


# --- listen ----------------------------------------------------------------------


@click.command()
@KIT_ARGUMENT
@connection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message on stdout.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N messages.")
@click.option("--timeout", type=seconds(), default=None, help="Stop after S seconds.")
@click.option("-q", "--quiet", is_flag=True, help="No connection status on stderr.")
def listen(
    kit: Path, as_json: bool, count: int | None, timeout: float | None, quiet: bool, **opts: Any
) -> None:
    """Print KIT's messages as they arrive (catching up first on what was missed).

    Rejected messages are reported on stderr with the rule they broke, and listening
    goes on. Messages still in the outbox are sent too.
    """
    settings = connection_settings(opts)
    with open_member(kit) as member:
        asyncio.run(_listen(member, settings, as_json, count, timeout, quiet))


async def _listen(
    member: Member,
    settings: ConnectionSettings,
    as_json: bool,
    count: int | None,
    timeout: float | None,
    quiet: bool,
) -> None:
    from ..client import (
        ConnectionChanged,
        MessageAccepted,
        MessageReceived,
        MessageRejected,
        MessagesMissing,
        PadExhausted,
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
    client = make_client(member, settings, presence=True, receive_limit=count)
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
                lines.status(
                    f"rejected message seq {event.seq} ({quote(event.rule)}): {quote(event.reason)}"
                )
            elif isinstance(event, PresenceChanged):
                lines.presence_changed(event)
            elif isinstance(event, MessagesMissing):
                _status(messages_missing_line(event))
            elif isinstance(event, StoreChanged):
                if not quiet:
                    lines.status(store_changed_line(event))
            elif isinstance(event, RelayFailing):
                _status(relay_failing_line(event))
            elif isinstance(event, ConnectionChanged):
                if event.state == "stopped" and client.failure is not None:
                    raise with_hint(client.failure)
                line = _connection_line(event)
                if line and not quiet:
                    lines.status(line, _connection_key(event))
            elif isinstance(event, MessageAccepted):
                lines.repeats.useful()
                if not quiet:
                    _status(f"sent: message {event.counter} accepted as seq {event.seq}")
            elif isinstance(event, PadLow | PadExhausted):
                warnings.check(member.own_pad())
    finally:
        await client.stop()
    if not client.ever_connected:
        detail = f": {client.last_error.message}" if client.last_error else ""
        hint = failure_hint(client.last_error) if client.last_error else None
        raise RelayUnreachable(f"could not reach the relay{detail}", hint=hint)


def describe_payload(obj: Any) -> tuple[dict[str, Any], str]:
    """The JSON fields (kind, text, file details) and the one-line human form of a
    decoded payload; `obj` is None for one this version cannot decode."""
    from ..files.names import safe_file_name
    from ..protocol.payload import FileChunk, FileHeader, TextPayload

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


def _print_message(event: Any, names: list[str], as_json: bool) -> None:
    rec = event.received
    obj = event.payload_obj
    fields, human = describe_payload(obj)
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
        echo_lines(folded_lines(f"[{when}] {quote(rec.sender_name)}: ", human))
    sys.stdout.flush()


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
            _status(line)

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
            _status(presence_note_text(note, self._who([note.member])))

    def _who(self, indexes: Iterable[int]) -> str:
        names = self.names
        return ", ".join(quote(names[i]) if i < len(names) else f"#{i}" for i in sorted(indexes))
