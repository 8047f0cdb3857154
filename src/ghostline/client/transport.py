"""Opening a TCP stream to a relay: plain, TLS (CA file or pinned certificate), SOCKS5.

The only module besides `client.py` that touches sockets. `open_stream` returns asyncio
streams; everything above it speaks frames and never knows which way the bytes went.

- `RelayAddress.parse("host:port")` reads a `--relay` value (IPv6 as `[::1]:8080`).
- `TlsOptions`: verify against the system store, a CA file, or pin the server's
  certificate by the SHA-256 of its DER bytes (a self-signed relay certificate).
- `proxy="socks5://host:port"` (or `socks5h://`, optionally `user:pass@`) tunnels the
  connection through a SOCKS5 proxy such as Tor; the relay's host name is sent to the
  proxy unresolved, so `.onion` addresses work.

It stays one file, a little over 400 lines: it is the one place that opens sockets for
the client, and each way of failing to (TLS, proxy) is a typed error the apps word.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from ..errors import GhostlineError, LocalError, RemoteError, UsageError
from ..tlspin import certificate_pin

DEFAULT_RELAY_PORT = 8080


class TransportError(RemoteError):
    """The connection to the relay could not be set up.

    `fatal` errors would come back on every retry (a certificate that does not match,
    a proxy that wants a password): a client stops on them at once."""

    fatal = False


class TlsError(TransportError):
    """TLS with the relay cannot work as configured."""

    fatal = True


CertificateProblem = Literal["untrusted", "name", "expired", "other"]


class TlsCertificateError(TlsError):
    """The relay's TLS certificate did not verify. `problem` says what did not match:
    "untrusted" (no trusted CA signed it), "name" (issued for another host name),
    "expired" (or not valid yet), "other"."""

    def __init__(self, message: str, problem: CertificateProblem) -> None:
        super().__init__(message)
        self.problem = problem


class TlsPinMismatch(TlsError):
    """The relay's TLS certificate does not match the pinned fingerprint."""


class TlsNotSpoken(TlsError):
    """TLS was asked for, but the relay answered in plain text."""


class TlsExpected(TlsError):
    """The relay speaks TLS, but the client was not told to use it."""


class ProxyError(TransportError):
    """The SOCKS5 proxy (not the relay) failed."""


class ProxyUnreachable(ProxyError):
    """The SOCKS5 proxy cannot be reached (it may be starting: retried)."""


class ProxyAuthError(ProxyError):
    """The SOCKS5 proxy wants a user name and password we do not have right."""

    fatal = True


class ProxyNotSocks(ProxyError):
    """What answers at the proxy address does not speak SOCKS5."""

    fatal = True


class TlsConfigError(LocalError):
    """The TLS options cannot be used."""


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """Where a relay listens: its message port, and its presence port (None: port + 1)."""

    host: str
    port: int
    presence_port: int | None = None

    @property
    def presence(self) -> int:
        return self.presence_port if self.presence_port is not None else self.port + 1

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, presence_port: int | None = None) -> RelayAddress:
        """Read `HOST:PORT`, `[IPv6]:PORT` or `HOST` (port 8080)."""
        text = text.strip()
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text)
        if m:
            host, port_text = m.group(1), m.group(2)
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        elif ":" in text:
            raise UsageError(f"relay address {text!r}: write IPv6 addresses as [ADDR]:PORT")
        else:
            host, port_text = text, None
        if not host:
            raise UsageError(f"relay address {text!r} has no host")
        port = DEFAULT_RELAY_PORT
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise UsageError(f"relay address {text!r}: the port must be 1 to 65535")
            port = int(port_text)
        return cls(host, port, presence_port)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS to the relay. With neither `ca_file` nor `pin`, the system CA store is used."""

    ca_file: str | None = None
    pin: str | None = None  # sha256 of the certificate's DER bytes, hex (colons allowed)
    server_name: str | None = None  # overrides the host name checked and sent as SNI

    def pin_bytes(self) -> bytes | None:
        if self.pin is None:
            return None
        text = self.pin.replace(":", "").strip().lower()
        if text.startswith("sha256/"):
            text = text[len("sha256/") :]
        if not re.fullmatch(r"[0-9a-f]{64}", text):
            raise TlsConfigError(
                "--tls-pin must be the SHA-256 of the certificate: 64 hex characters"
            )
        return bytes.fromhex(text)

    def context(self) -> ssl.SSLContext:
        if self.pin is not None:
            # The pin replaces chain and name checks: it names the one certificate we accept.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            try:
                ctx = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigError(f"cannot load the CA file {self.ca_file}: {exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> ProxyAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("socks5", "socks5h") or not parts.hostname:
            raise UsageError(f"proxy {url!r}: only socks5://HOST:PORT proxies are supported")
        try:
            port = parts.port or 1080
        except ValueError:
            raise UsageError(f"proxy {url!r}: bad port") from None
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, user, password)


async def open_stream(
    host: str,
    port: int,
    *,
    tls: TlsOptions | None = None,
    proxy: str | ProxyAddress | None = None,
    timeout: float = 10.0,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to host:port, through a SOCKS5 proxy when given, then start TLS when asked.

    Raises TransportError (a TlsError, ProxyError, ...: see above) on failure; never
    leaves a socket open.
    """
    ctx = tls.context() if tls else None
    pin = tls.pin_bytes() if tls else None
    server_name = (tls.server_name if tls else None) or host
    proxy_addr = ProxyAddress.parse(proxy) if isinstance(proxy, str) else proxy
    writer: asyncio.StreamWriter | None = None
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            if proxy_addr is None:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ctx, server_hostname=server_name if ctx else None
                )
            else:
                try:
                    reader, writer = await asyncio.open_connection(proxy_addr.host, proxy_addr.port)
                except OSError as exc:
                    raise ProxyUnreachable(
                        f"cannot connect to the proxy {proxy_addr.host}:{proxy_addr.port}: "
                        f"{_why(exc)}"
                    ) from None
                await socks5_connect(reader, writer, host, port, proxy_addr)
                if ctx is not None:
                    await writer.start_tls(ctx, server_hostname=server_name)
            if pin is not None:
                _check_pin(writer, pin)
    except TransportError:
        _close_quietly(writer)
        raise
    except TimeoutError:
        _close_quietly(writer)
        raise TransportError(f"connecting to {where} timed out after {timeout:g} s") from None
    except ssl.SSLCertVerificationError as exc:
        _close_quietly(writer)
        raise _certificate_error(exc, where, server_name) from None
    except ssl.SSLError as exc:
        _close_quietly(writer)
        if exc.reason in _PLAIN_TEXT_REASONS:
            raise TlsNotSpoken(f"{where} answered without TLS") from None
        raise TransportError(f"TLS with {where} failed: {exc.reason or exc}") from None
    except OSError as exc:
        _close_quietly(writer)
        via = f" via proxy {proxy_addr.host}:{proxy_addr.port}" if proxy_addr else ""
        raise TransportError(f"cannot connect to {where}{via}: {_why(exc)}") from None
    return reader, writer


# What OpenSSL says when the bytes that come back are not a TLS record.
_PLAIN_TEXT_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"}
)
# OpenSSL's X509_V_ERR_* codes, by what a person must check.
_CERT_EXPIRED = frozenset({9, 10})  # not yet valid, expired
_CERT_NAME = frozenset({62, 64})  # host name, IP address mismatch
_CERT_UNTRUSTED = frozenset({2, 18, 19, 20, 21})  # no trusted issuer, self-signed


def _certificate_error(
    exc: ssl.SSLCertVerificationError, where: str, server_name: str
) -> TlsCertificateError:
    code = exc.verify_code
    problem: CertificateProblem
    if code in _CERT_EXPIRED:
        problem = "expired"
    elif code in _CERT_NAME:
        problem = "name"
    elif code in _CERT_UNTRUSTED:
        problem = "untrusted"
    else:
        problem = "other"
    detail = exc.verify_message or exc.reason or str(exc)
    if problem == "name":
        detail = f"it is not issued for {server_name}"
    return TlsCertificateError(f"the TLS certificate of {where} did not verify: {detail}", problem)


def looks_like_tls(data: bytes) -> bool:
    """Whether `data`, the first bytes a relay sent, start a TLS record (a handshake or
    an alert) rather than a GhostLine frame, whose first byte is 0 for any frame up to
    16 MiB."""
    return len(data) >= 3 and data[0] in (0x15, 0x16) and data[1] == 0x03 and data[2] <= 0x04


async def speaks_tls(
    host: str, port: int, *, proxy: str | ProxyAddress | None = None, timeout: float = 5.0
) -> bool:
    """Whether host:port completes a TLS handshake (any certificate): asked once when a
    plain connection is closed before the relay answers, to tell a TLS relay from a
    failing one. Never raises for a failed connection."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        proxy_addr = ProxyAddress.parse(proxy) if isinstance(proxy, str) else proxy
        async with asyncio.timeout(timeout):
            if proxy_addr is None:
                _, writer = await asyncio.open_connection(host, port, ssl=probe)
            else:
                reader, writer = await asyncio.open_connection(proxy_addr.host, proxy_addr.port)
                try:
                    await socks5_connect(reader, writer, host, port, proxy_addr)
                    await writer.start_tls(probe, server_hostname=host)
                except BaseException:
                    writer.close()
                    raise
    except (OSError, TimeoutError, GhostlineError):
        return False
    writer.close()
    return True


def _why(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host name"
    return exc.strerror or str(exc)


def _check_pin(writer: asyncio.StreamWriter, pin: bytes) -> None:
    sslobj = writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der or certificate_pin(der) != pin.hex():
        got = certificate_pin(der) if der else "none"
        raise TlsPinMismatch(f"the relay's certificate has fingerprint {got}, not the pinned one")


def _close_quietly(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


# --- SOCKS5 (RFC 1928, RFC 1929) ---------------------------------------------------

_SOCKS_REPLIES = {
    1: "general failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


async def socks5_connect(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    proxy: ProxyAddress,
) -> None:
    """Ask a SOCKS5 proxy on (reader, writer) to CONNECT to host:port."""
    methods = b"\x00\x02" if proxy.username is not None else b"\x00"
    writer.write(b"\x05" + bytes((len(methods),)) + methods)
    ver, method = await _read_exact(reader, 2)
    if ver != 5:
        raise ProxyNotSocks(f"{proxy.host}:{proxy.port} is not a SOCKS5 proxy")
    if method == 0x02 and proxy.username is not None:
        user = proxy.username.encode()
        password = (proxy.password or "").encode()
        writer.write(b"\x01" + bytes((len(user),)) + user + bytes((len(password),)) + password)
        _, status = await _read_exact(reader, 2)
        if status != 0:
            raise ProxyAuthError("the SOCKS5 proxy refused the user name and password")
    elif method == 0x02:
        raise ProxyAuthError("the SOCKS5 proxy wants a user name and password")
    elif method != 0x00:
        raise ProxyAuthError("the SOCKS5 proxy accepts none of our authentication methods")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if len(name) > 255:
            raise TransportError(f"host name {host!r} is too long for SOCKS5") from None
        addr = b"\x03" + bytes((len(name),)) + name
    else:
        addr = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    writer.write(b"\x05\x01\x00" + addr + struct.pack(">H", port))
    ver, rep, _, atyp = await _read_exact(reader, 4)
    if ver != 5:
        raise ProxyNotSocks("the SOCKS5 proxy sent a malformed reply")
    if rep != 0:
        reason = _SOCKS_REPLIES.get(rep, f"error {rep}")
        raise TransportError(f"the SOCKS5 proxy could not reach {host}:{port}: {reason}")
    if atyp == 1:
        await _read_exact(reader, 4 + 2)
    elif atyp == 4:
        await _read_exact(reader, 16 + 2)
    elif atyp == 3:
        (size,) = await _read_exact(reader, 1)
        await _read_exact(reader, size + 2)
    else:
        raise ProxyNotSocks("the SOCKS5 proxy sent a malformed reply")


async def _read_exact(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProxyError("the SOCKS5 proxy closed the connection") from None
