"""The connection options every command that talks to a relay takes, checked up front.

`connection_settings` reads and checks all of them (relay addresses, presence port, TLS
files and pin, proxy URL) before a command opens its kit: a usage error (exit 2) must
mean that nothing was sealed, so no option may be found bad after a message is.
`GHOSTLINE_RELAY` gives the default relay (several separated by spaces).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import UsageError
from .params import Number

if TYPE_CHECKING:
    from ..client import Client
    from ..client.transport import RelayAddress, TlsOptions
    from ..state.member import Member

F = TypeVar("F", bound=Callable[..., Any])

RELAY_ENV = "GHOSTLINE_RELAY"


def connection_options(fn: F) -> F:
    """--relay (repeatable; default from GHOSTLINE_RELAY), --presence-port, TLS, proxy."""
    options = [
        click.option(
            "--relay",
            "relays",
            metavar="HOST[:PORT]",
            multiple=True,
            envvar=RELAY_ENV,
            show_envvar=True,
            help="Relay address (port 8080 when left out); repeat it to fail over among "
            f"the nodes of one relay cluster ({RELAY_ENV}: separate them by spaces).",
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


def auto_give_option(fn: F) -> F:
    """--no-auto-give, for the commands that read the group (listen, chat, web)."""
    return click.option(
        "--no-auto-give",
        "no_auto_give",
        is_flag=True,
        help="Format-2 kits: never give pad to a member running low on your own "
        "(by default, when you hold more than you are likely to need, part of your unused "
        "pad goes to the member shortest of it; see `ghostline pad give`).",
    )(fn)


def accept_timeout_option(what: str) -> Callable[[F], F]:
    """--timeout: how long a command that sends (`send`, `pad give`) waits for the relay
    to accept `what` (what it sealed stays in the outbox when it gives up)."""
    return click.option(
        "--timeout",
        type=Number(min=0.1),
        default=30.0,
        show_default=True,
        help=f"Seconds to wait for the relay to accept {what}.",
    )


@dataclass(frozen=True)
class ConnectionSettings:
    """Checked connection options, ready for a Client."""

    relays: list[RelayAddress]
    presence_port: int | None
    tls: TlsOptions | None
    proxy: str | None


def connection_settings(opts: dict[str, Any]) -> ConnectionSettings:
    """Check every connection option; raise UsageError for the first bad one."""
    from ..client.transport import ProxyAddress, RelayAddress

    if not opts["relays"]:
        raise UsageError(f"no relay given: pass --relay HOST:PORT, or set {RELAY_ENV}")
    relays = [RelayAddress.parse(r, presence_port=opts["presence_port"]) for r in opts["relays"]]
    if opts["proxy"]:
        ProxyAddress.parse(opts["proxy"])
    return ConnectionSettings(
        relays=relays,
        presence_port=opts["presence_port"],
        tls=_tls(opts["tls"], opts["tls_ca"], opts["tls_pin"]),
        proxy=opts["proxy"] or None,
    )


def _tls(tls: bool, tls_ca: str | None, tls_pin: str | None) -> TlsOptions | None:
    from ..client.transport import TlsConfigError, TlsOptions

    if not (tls or tls_ca or tls_pin):
        return None
    options = TlsOptions(ca_file=tls_ca, pin=tls_pin)
    try:
        options.pin_bytes()
        if tls_ca:
            options.context()  # loads the CA file: a file that is no CA fails here
    except TlsConfigError as err:
        raise UsageError(err.message) from None
    return options


def make_client(
    member: Member,
    settings: ConnectionSettings,
    *,
    presence: bool,
    receive: bool = True,
    receive_limit: int | None = None,
    auto_give: bool = False,
) -> Client:
    """A Client for `member` with checked settings (see `connection_settings`)."""
    from ..client import Client

    return Client(
        member,
        settings.relays,
        presence_port=settings.presence_port,
        tls=settings.tls,
        proxy=settings.proxy,
        presence=presence,
        receive=receive,
        receive_limit=receive_limit,
        auto_give=auto_give,
    )
