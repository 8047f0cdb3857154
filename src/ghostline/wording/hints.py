"""What a person can do about a connection failure that retrying cannot fix: a TLS
certificate or pin that does not match, a proxy that fails, a relay's refusal. The CLI's
`send` and `listen` and the chat app give these hints."""

from __future__ import annotations

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
from ..errors import GhostlineError, RelayRefused
from ..protocol.frames import REASON_PRESENCE_PORT, REASON_RELAY_PORT, ErrorCode

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
