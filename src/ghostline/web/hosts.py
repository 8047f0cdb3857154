"""The names `ghostline web` answers to in `Host` and `Origin`, and the address it prints.

On loopback (the default) that is 127.0.0.1, ::1 and localhost. With --allow-remote it
is every IP address of this machine's interfaces that the listening socket can be
reached on, plus the names given with --allow-host. A DNS name is refused unless it
was given: a web site whose name an attacker re-points at this machine (DNS
rebinding) sends its own name in `Host`, and that is what keeps it out. An IP literal
cannot be re-pointed: a browser sends one only to that very address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from pathlib import Path

from ..errors import UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})
_NAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
# Addresses no packet is sent to: connecting a UDP socket there only asks the system
# which local address it would use (the machine's address on its main network).
_PROBES = ("192.0.2.1", "2001:db8::1")


def as_address(text: str) -> IPAddress | None:
    """`text` (brackets allowed around IPv6) as an IP address, or None for a name."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def allowed_name(text: str) -> str | IPAddress:
    """A --allow-host value, checked: an IP address, or a DNS name in lower case."""
    address = as_address(text)
    if address is not None:
        return address
    name = text.lower().rstrip(".")
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"--allow-host {text!r} is not a host name or an IP address (give the name "
            "alone: no scheme, port or path)"
        )
    return name


def local_addresses() -> frozenset[IPAddress]:
    """The IP addresses of this machine's interfaces (as far as the system tells)."""
    found: set[IPAddress] = set(LOOPBACK)
    found |= _linux_ipv4() | _linux_ipv6()
    for probe in _PROBES:
        address = _outbound(probe)
        if address is not None:
            found.add(address)
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        infos = []
    for info in infos:
        address = as_address(str(info[4][0]).partition("%")[0])
        if address is not None:
            found.add(address)
    return frozenset(found)


def reachable(bound: str, local: Iterable[IPAddress]) -> frozenset[IPAddress]:
    """The addresses a socket bound to `bound` is reached on: every local IPv4 address
    for 0.0.0.0, every local address for :: (IPv4 too, where the system allows it),
    else the bound address itself (and the loopbacks, for a loopback one)."""
    address = as_address(bound)
    if address is None:  # localhost
        return LOOPBACK
    if address.is_unspecified:
        versions = {4} if address.version == 4 else {4, 6}
        return frozenset(a for a in local if a.version in versions)
    if address.is_loopback:
        return LOOPBACK | {address}
    return frozenset({address})


def url_host(bound: str, addresses: Iterable[IPAddress], names: Iterable[str]) -> str:
    """The host for the address to print: a given name, else the bound address, else
    the machine's address on its main network (not loopback), else 127.0.0.1."""
    for name in names:
        return name
    address = as_address(bound)
    if address is None:
        return bound
    if not address.is_unspecified:
        return _bracketed(address)
    pool = set(addresses)
    for probe in _PROBES:
        main = _outbound(probe)
        if main is not None and main in pool and not main.is_loopback:
            return _bracketed(main)
    for other in sorted(pool, key=lambda a: (a.version, a.is_link_local, str(a))):
        if not (other.is_loopback or other.is_link_local):
            return _bracketed(other)
    return "127.0.0.1"


def _bracketed(address: IPAddress) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def _outbound(probe: str) -> IPAddress | None:
    family = socket.AF_INET6 if ":" in probe else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            return as_address(str(sock.getsockname()[0]).partition("%")[0])
    except OSError:
        return None


def _linux_ipv4() -> set[IPAddress]:
    """Linux lists the machine's own IPv4 addresses as `/32 host LOCAL` routes."""
    found: set[IPAddress] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return found
    previous = ""
    for line in lines:
        text = line.strip()
        if text.startswith("|-- "):
            previous = text[4:]
        elif text == "/32 host LOCAL" and (address := as_address(previous)) is not None:
            found.add(address)
    return found


def _linux_ipv6() -> set[IPAddress]:
    found: set[IPAddress] = set()
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        field = line.split()[0] if line.split() else ""
        if len(field) == 32:
            with_colons = ":".join(field[i : i + 4] for i in range(0, 32, 4))
            address = as_address(with_colons)
            if address is not None:
                found.add(address)
    return found
