"""`ghostline send`, `listen` and `history`: chat from the command line.

Messages go to stdout (one per line; `--json` for one JSON object per line); status,
presence and rejected messages go to stderr, prefixed `ghostline:`. Every failure is a
`GhostlineError`, which `cli.main` prints as one line (and a hint) with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import GhostlineError, RelayUnreachable, UsageError
from .relaystatus import (
    failure_hint,
    messages_missing_line,
    relay_failing_line,
    retry_line,
    store_changed_line,
    with_hint,
)

if TYPE_CHECKING:
    from ..client import Client, ConnectionChanged, Event
    from ..member import Member
    from ..transport import RelayAddress, TlsOptions

F = TypeVar("F", bound=Callable[..., Any])

_OUTBOX_HINT = (
    "Check the --relay address and that the relay is running. The message is sealed and "
    "kept in the outbox: the next `ghostline send` or `listen` sends it."
)
_OUTBOX_NOTE = "The message is sealed and kept in the outbox: the next `send` or `listen` sends it."
# `send` says it is retrying only when the relay has not taken the message this long
# after a failed attempt: a quick success prints nothing.
RETRY_NOTICE_DELAY = 2.0


def connection_options(fn: F) -> F:
    """--relay (repeatable), --presence-port, TLS and proxy options."""
    options = [
        click.option(
            "--relay",
            "relays",
            metavar="HOST:PORT",
            multiple=True,
            required=True,
            help="Relay address; repeat it to fail over among several relays.",
        ),
        click.option(
            "--presence-port",
            type=click.IntRange(1, 65535),
            default=None,
            metavar="P",
            help="Presence port of the relay(s) (default: the relay port + 1).",
        ),
        click.option("--tls", is_flag=True, help="Connect with TLS (both ports)."),
        click.option(
            "--tls-ca",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            metavar="FILE",
            help="Verify the relay against this CA file (implies --tls).",
        ),
        click.option(
            "--tls-pin",
            default=None,
            metavar="SHA256",
            help="Accept only the certificate with this SHA-256 fingerprint (implies --tls).",
        ),
        click.option(
            "--proxy",
            default=None,
            metavar="socks5://HOST:PORT",
            help="Connect through a SOCKS5 proxy, e.g. Tor at socks5://127.0.0.1:9050.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _relays(relays: tuple[str, ...], presence_port: int | None) -> list[RelayAddress]:
    from ..transport import RelayAddress

    return [RelayAddress.parse(r, presence_port=presence_port) for r in relays]


def _tls(tls: bool, tls_ca: str | None, tls_pin: str | None) -> TlsOptions | None:
    from ..transport import TlsOptions

    if not (tls or tls_ca or tls_pin):
        return None
    options = TlsOptions(ca_file=tls_ca, pin=tls_pin)
    options.pin_bytes()  # refuse a malformed pin before connecting
    return options


def make_client(
    member: Member,
    opts: dict[str, Any],
    *,
    presence: bool,
    receive: bool = True,
    receive_limit: int | None = None,
) -> Client:
    """A Client for `member` from the `connection_options` values; a malformed proxy URL
    or TLS pin is refused here, before any connection is tried."""
    from ..client import Client
    from ..transport import ProxyAddress

    if opts["proxy"]:
        ProxyAddress.parse(opts["proxy"])  # a bad URL is a usage error, not a retry loop
    return Client(
        member,
        _relays(opts["relays"], opts["presence_port"]),
        presence_port=opts["presence_port"],
        tls=_tls(opts["tls"], opts["tls_ca"], opts["tls_pin"]),
        proxy=opts["proxy"],
        presence=presence,
        receive=receive,
        receive_limit=receive_limit,
    )


def open_member(kit: Path) -> Member:
    """The member KIT belongs to, with its durable state (use it in a `with` block)."""
    from ..member import Member

    return Member.open(kit)


def _status(text: str) -> None:
    click.echo(f"ghostline: {text}", err=True)


def _connection_line(ev: ConnectionChanged) -> str | None:
    if ev.channel == "presence":
        # Presence is optional: only worth a line while messaging itself works.
        if ev.retry_in is not None and ev.state == "connected":
            return f"{ev.detail} (retrying in {ev.retry_in:.1f} s)"
        return None
    if ev.state == "connected":
        return f"connected to {ev.relay}: {ev.detail}"
    if ev.state == "reconnecting" and ev.retry_in is not None:
        return f"{ev.detail}; reconnecting to {ev.relay} in {ev.retry_in:.1f} s"
    return None


# --- send ------------------------------------------------------------------------


@click.command()
@click.argument("kit", type=click.Path(path_type=Path))
@click.argument("text", nargs=-1)
@connection_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
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
    goes out with the next `send` or `listen`, byte for byte the same.
    """
    if flush and text:
        raise UsageError("--flush sends the outbox only: give no TEXT")
    if not flush and not text:
        raise UsageError("nothing to send: give TEXT, or - to read it from stdin")
    if lines and text != ("-",):
        raise UsageError("--lines reads stdin: give TEXT as -")
    with open_member(kit) as member:
        asyncio.run(_send(member, opts, text, timeout, lines, quiet))


async def _send(
    member: Member,
    opts: dict[str, Any],
    text: tuple[str, ...],
    timeout: float,
    lines: bool,
    quiet: bool,
) -> None:
    from ..payload import encode_text

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if text and not lines:
        message = sys.stdin.read() if text == ("-",) else " ".join(text)
        if text == ("-",) and message.endswith("\n"):
            message = message[:-1]
        if not message:
            raise UsageError("nothing to send: the message is empty")
        # Sealed (and the pad checked) before any connection: exhaustion consumes nothing.
        member.seal(encode_text(message, int(time.time())))
    client = make_client(member, opts, presence=False, receive=False)
    await client.start()
    watch = asyncio.ensure_future(_watch_send(client, timeout))
    exhausted: BaseException | None = None
    sent = 0
    try:
        if lines:
            sent, exhausted = await _send_lines(client)
            deadline = loop.time() + timeout
        counters = client.pending_counters()
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
        await client.stop()
    if exhausted is not None:
        raise exhausted


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
        try:
            event = await asyncio.wait_for(client.events.get(), wait)
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
            if counter not in client.pending_counters():
                return next(
                    (h.seq or 0 for h in reversed(client.member.history())
                     if h.sender == client.member.index and h.counter == counter),
                    0,
                )  # fmt: skip
    return None


async def _send_lines(client: Client) -> tuple[int, BaseException | None]:
    """Seal and queue each stdin line as it comes. Returns how many were sealed, and the
    PadExhaustedError that stopped it, if one did."""
    from ..errors import PadExhaustedError

    loop = asyncio.get_running_loop()
    sealed = 0
    while True:
        raw = await loop.run_in_executor(None, sys.stdin.buffer.readline)
        if not raw:
            return sealed, None
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            continue
        try:
            await client.send_text(line)
        except PadExhaustedError as err:
            return sealed, err
        sealed += 1


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
@click.argument("kit", type=click.Path(path_type=Path))
@connection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message on stdout.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N messages.")
@click.option(
    "--timeout", type=click.FloatRange(min=0.0), default=None, help="Stop after S seconds."
)
@click.option("-q", "--quiet", is_flag=True, help="No connection status on stderr.")
def listen(
    kit: Path, as_json: bool, count: int | None, timeout: float | None, quiet: bool, **opts: Any
) -> None:
    """Print KIT's messages as they arrive (catching up first on what was missed).

    Rejected messages are reported on stderr with the rule they broke, and listening
    goes on. Messages still in the outbox are sent too.
    """
    with open_member(kit) as member:
        asyncio.run(_listen(member, opts, as_json, count, timeout, quiet))


async def _listen(
    member: Member,
    opts: dict[str, Any],
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
    client = make_client(member, opts, presence=True, receive_limit=count)
    shown = 0
    await client.start()
    try:
        while count is None or shown < count:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            try:
                event: Event = await asyncio.wait_for(client.events.get(), remaining)
            except TimeoutError:
                break
            if isinstance(event, MessageReceived):
                shown += 1
                _print_message(event, names, as_json)
            elif isinstance(event, MessageRejected):
                _status(f"rejected message seq {event.seq} ({event.rule}): {event.reason}")
            elif isinstance(event, PresenceChanged):
                if not quiet:
                    _print_presence(event, names)
            elif isinstance(event, MessagesMissing):
                _status(messages_missing_line(event))
            elif isinstance(event, StoreChanged):
                if not quiet:
                    _status(store_changed_line(event))
            elif isinstance(event, RelayFailing):
                _status(relay_failing_line(event))
            elif isinstance(event, ConnectionChanged):
                if event.state == "stopped" and client.failure is not None:
                    raise with_hint(client.failure)
                line = _connection_line(event)
                if line and not quiet:
                    _status(line)
            elif isinstance(event, MessageAccepted):
                if not quiet:
                    _status(f"sent: message {event.counter} accepted as seq {event.seq}")
            elif isinstance(event, PadLow):
                _status(f"warning: only {event.fraction_left:.1%} of your pad is left")
            elif isinstance(event, PadExhausted):
                _status("warning: your pad is used up; you can still read messages")
    finally:
        await client.stop()
    if not client.ever_connected:
        detail = f": {client.last_error.message}" if client.last_error else ""
        hint = failure_hint(client.last_error) if client.last_error else None
        raise RelayUnreachable(f"could not reach the relay{detail}", hint=hint)


def describe_payload(obj: Any) -> tuple[dict[str, Any], str]:
    """The JSON fields (kind, text, file details) and the one-line human form of a
    decoded payload; `obj` is None for one this version cannot decode."""
    from ..payload import FileChunk, FileHeader, TextPayload

    if isinstance(obj, TextPayload):
        return {"kind": "text", "text": obj.text}, obj.text
    if isinstance(obj, FileHeader):
        fields = {"kind": "file", "text": None, "file": obj.safe_name, "size": obj.total_size}
        human = f"[file {obj.safe_name!r}, {obj.total_size} bytes, {obj.chunk_count} chunks]"
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
        line = json.dumps(record, ensure_ascii=False)
    else:
        when = datetime.fromtimestamp(record["sent_at"] or time.time()).strftime("%H:%M:%S")
        line = f"[{when}] {rec.sender_name}: {human}"
    click.echo(line)
    sys.stdout.flush()


def _print_presence(event: Any, names: list[str]) -> None:
    def who(indexes: frozenset[int]) -> str:
        return ", ".join(names[i] if i < len(names) else f"#{i}" for i in sorted(indexes))

    if event.joined and not event.left and len(event.joined) < len(event.online):
        _status(f"{who(event.joined)} came online")
    elif event.left and not event.joined:
        _status(f"{who(event.left)} went offline")
    else:
        _status(f"online now: {who(event.online) or 'nobody'}")


# --- history ---------------------------------------------------------------------


@click.command()
@click.argument("kit", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the last N.")
def history(kit: Path, as_json: bool, limit: int | None) -> None:
    """Print KIT's local message history: what it received and what it sent."""
    from ..errors import PayloadError
    from ..payload import decode

    with open_member(kit) as member:
        entries = member.history(limit)
    for entry in entries:
        try:
            obj: Any = decode(entry.payload)
        except PayloadError:
            obj = None
        fields, shown = describe_payload(obj)
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
        click.echo(f"[{when}] {entry.sender_name}: {shown}{mark}")
