"""What a person reads about the relay connection: hints for failures that retrying
cannot fix, lines for the client's events about the relay's store, missing seqs and
a relay that keeps failing, and which of those lines are worth repeating (`Repeats`).
Shared by `send`, `listen` and the chat apps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..client.transport import (
    ProxyAuthError,
    ProxyError,
    ProxyNotSocks,
    ProxyUnreachable,
    TlsCertificateError,
    TlsExpected,
    TlsNotSpoken,
    TlsPinMismatch,
)
from ..display import quote
from ..errors import GhostlineError, RelayRefused
from ..protocol.frames import REASON_PRESENCE_PORT, REASON_RELAY_PORT, ErrorCode

if TYPE_CHECKING:
    from ..client import MessagesMissing, RelayFailing, StoreChanged
    from ..presencenotes import PresenceNote

_CERTIFICATE_HINTS = {
    "untrusted": (
        "No CA you trust signed the relay's certificate. Give its CA with --tls-ca FILE, "
        "or pin the certificate itself with --tls-pin SHA256 (the relay prints its pin)."
    ),
    "name": (
        "The certificate was issued for another name: connect with the name it names in "
        "--relay, or pin it with --tls-pin SHA256."
    ),
    "expired": (
        "The certificate is out of date (or your clock is wrong): the relay's operator must "
        "renew it, or check this computer's date."
    ),
    "other": "Check --tls-ca, or pin the certificate with --tls-pin SHA256.",
}


# What a person can do about a relay's refusal, by its ERROR code (docs/PROTOCOL.md
# section 8); the refusals that name a port have their own hints below.
_REFUSAL_HINTS: dict[int, str] = {
    ErrorCode.ROSTER_MISMATCH: (
        "the relay holds this room with another member list: someone registered it first "
        "with other keys (a member of your group, or anyone who saw a member's HELLO sent "
        "without --tls). Your group cannot use this room on this relay until its operator "
        "removes the room: make a new kit set (a new room) and use it with --tls, or ask "
        "the relay's operator."
    ),
    ErrorCode.BAD_SIGNATURE: (
        "the relay did not accept this kit's signature: the kit may be damaged or not from "
        "this kit set."
    ),
    ErrorCode.BAD_HANDSHAKE: (
        "the relay did not accept the handshake: is it a GhostLine relay speaking protocol v1?"
    ),
    ErrorCode.BAD_PUBLISH: (
        "the relay refused a message from the outbox: is the kit from the same kit set?"
    ),
    ErrorCode.RELAY_FULL: "the relay is at its limit; try again later or another relay.",
    ErrorCode.RATE_LIMITED: "too many messages too fast; GhostLine will retry.",
}


def failure_hint(err: GhostlineError) -> str | None:
    """The hint for a connection failure, or None to keep the error's own."""
    if isinstance(err, TlsCertificateError):
        return _CERTIFICATE_HINTS[err.problem]
    if isinstance(err, TlsPinMismatch):
        return (
            "The relay presented another certificate than --tls-pin names: check the pin "
            "against the one the relay prints at start (the relay may have a new certificate, "
            "or someone is in between)."
        )
    if isinstance(err, TlsNotSpoken):
        return "The relay does not use TLS: leave out --tls, --tls-ca and --tls-pin."
    if isinstance(err, TlsExpected):
        return "The relay uses TLS: add --tls (with --tls-ca FILE or --tls-pin SHA256)."
    if isinstance(err, ProxyUnreachable):
        return "Check --proxy and that the proxy (e.g. Tor) is running."
    if isinstance(err, ProxyAuthError):
        return "Give the proxy's user name and password as socks5://USER:PASSWORD@HOST:PORT."
    if isinstance(err, ProxyNotSocks):
        return "--proxy must name a SOCKS5 proxy (Tor's is socks5://127.0.0.1:9050)."
    if isinstance(err, ProxyError):
        return "Check --proxy and that the proxy is running."
    if isinstance(err, RelayRefused) and err.reason == REASON_PRESENCE_PORT:
        return (
            "--relay names the relay's presence port: give it the relay port (by default "
            "the presence port minus 1)."
        )
    if isinstance(err, RelayRefused) and err.reason == REASON_RELAY_PORT:
        return (
            "--presence-port names the relay port: give the relay's presence port (by "
            "default the relay port plus 1), or leave it out."
        )
    if isinstance(err, RelayRefused):
        return _REFUSAL_HINTS.get(err.code)
    return None


def with_hint(err: GhostlineError) -> GhostlineError:
    """`err`, with the hint `failure_hint` has for it (if any)."""
    hint = failure_hint(err)
    if hint is not None:
        err.hint = hint
    return err


def store_changed_line(event: StoreChanged) -> str:
    if event.went_back:
        return (
            f"the relay {event.relay} no longer holds the messages you read (up to seq "
            f"{event.old_cursor}): its message store went back to an earlier state (restored "
            "from a backup?) or was replaced. Reading it again from its first message; "
            "messages you already have are not shown twice. Messages stored after that "
            "earlier state that you had not received are not on this relay any more."
        )
    return (
        f"the relay {event.relay} has another message store than before (a new or replaced "
        "store, or another relay): reading it from its first message; messages you already "
        "have are not shown twice. Messages the old store held that you had not received "
        "are not in this one: they reach you only from a relay that still has the old store."
    )


def messages_missing_line(event: MessagesMissing) -> str:
    which = (
        f"seq {event.first}" if event.first == event.last else f"seqs {event.first}-{event.last}"
    )
    return (
        f"warning: relay {which} never arrived, though later ones did, even when asked for "
        "again: the relay no longer has them (retention) or withheld them, or the network "
        "dropped them. Messages may be missing there."
    )


def relay_failing_line(event: RelayFailing) -> str:
    if event.code == ErrorCode.INTERNAL:
        what = f"the relay failed with an internal error {event.times} times in a row"
    else:
        what = f"the relay refused {event.times} times in a row"
    if event.code in (ErrorCode.RELAY_FULL, ErrorCode.RATE_LIMITED):
        why = "it is full or busy; it may take this member once others leave"
    else:
        why = "it has a problem its operator must fix"
    return (
        f"warning: {what} ({quote(event.reason)}): {why}. "
        "Your messages stay in the outbox; GhostLine keeps trying."
    )


def retry_line(detail: str, timeout: float) -> str:
    """The one line `send` prints when the relay has not taken the message yet."""
    return (
        f"the relay has not accepted the message yet ({detail}); retrying for up to "
        f"{timeout:g} s. Ctrl-C stops: the message stays sealed in the outbox and goes out "
        "with the next `ghostline send` or `listen`."
    )


def presence_note_text(note: PresenceNote, name: str) -> str:
    """A presence note (`presencenotes`) about the member called `name` (shown safely)."""
    if note.changes == 1:
        return f"{name} came online" if note.online else f"{name} went offline"
    where = "online" if note.online else "offline"
    return f"{name} came and went ({note.changes} changes, not told one by one); {where} now"


# A status line that says again what one said this recently is left out (and counted).
REPEAT_AFTER = 60.0


class Repeats:
    """Which status lines are worth showing: one that says what a line shown less than
    `every` seconds ago said (the same `key`) is left out and counted, and shown again,
    with that count, once `every` has passed. So a relay that fails every connection the
    same way (a reconnect every few seconds) fills no screen. `useful()` (a message came
    or was accepted) lets every line be shown again."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, every: float = REPEAT_AFTER
    ) -> None:
        self.clock = clock
        self.every = every
        self._shown: dict[str, tuple[float, int]] = {}  # key -> (when shown, left out since)

    def line(self, key: str, text: str) -> str | None:
        """`text` to show now, or None to leave it out."""
        now = self.clock()
        last = self._shown.get(key)
        if last is not None and now - last[0] < self.every:
            self._shown[key] = (last[0], last[1] + 1)
            return None
        self._shown[key] = (now, 0)
        if last is None or not last[1]:
            return text
        again = "once more" if last[1] == 1 else f"{last[1]} more times"
        return f"{text} (this came {again} in the last {now - last[0]:.0f} s)"

    def useful(self) -> None:
        self._shown.clear()
