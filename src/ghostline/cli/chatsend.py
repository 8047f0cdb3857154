"""`ghostline send`: seal a message, send it, and exit once the relay has accepted it.

The message is sealed and stored durably before any connection; one the relay does not
take stays in the outbox for the next `send` or `listen`. Status goes to stderr,
prefixed `ghostline:`. Every failure is a `GhostlineError`, which `cli.main` prints as
one line (and a hint) with a non-zero exit. `pad give` sends its grant with
`send_pending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import GhostlineError, LocalError, RelayUnreachable, UsageError
from ..wording.hints import failure_hint
from ..wording.relaylines import relay_failing_line
from .connect import (
    ConnectionSettings,
    accept_timeout_option,
    connection_options,
    connection_settings,
    make_client,
)
from .kits import KIT_ARGUMENT, open_member
from .padwarn import PadWarnings
from .relaystatus import retry_line, with_hint
from .terminal import status
from .textin import NOT_TEXT_HINT, TOO_LARGE_HINT, message_text, not_utf8

if TYPE_CHECKING:
    from ..client import Client
    from ..state.member import Member

_OUTBOX_HINT = (
    "Check the --relay address and that the relay is running. The message is sealed and "
    "kept in the outbox: the next `ghostline send` or `listen` sends it."
)
_OUTBOX_NOTE = "The message is sealed and kept in the outbox: the next `send` or `listen` sends it."
# `send` says it is retrying only when the relay has not taken the message this long
# after a failed attempt: a quick success prints nothing.
RETRY_NOTICE_DELAY = 2.0


@click.command()
@KIT_ARGUMENT
@click.argument("text", nargs=-1)
@connection_options
@accept_timeout_option("everything")
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
                status(f"sent: message {counter} accepted by the relay as seq {seq}")
        if not quiet and lines:
            status(f"sent: {_plural(sent, 'message')} accepted by the relay")
    except GhostlineError as err:
        raise with_hint(err) from None
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await client.stop()
    if stopped_by is not None:
        raise stopped_by


async def send_pending(
    member: Member, settings: ConnectionSettings, timeout: float, quiet: bool
) -> None:
    """Send what the outbox holds, as `send --flush` does (`pad give` after sealing)."""
    await _send(member, settings, None, timeout, False, quiet)


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
            status(retry_line(failed or "", timeout))
            notice_at = float("inf")
            failed = None
            continue
        if isinstance(event, RelayFailing):
            status(relay_failing_line(event))
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
