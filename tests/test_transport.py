"""transport.open_stream over real loopback sockets: plain, SOCKS5, TLS with CA or pin."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghostline.client.transport import (
    ProxyAddress,
    ProxyAuthError,
    ProxyNotSocks,
    ProxyUnreachable,
    RelayAddress,
    TlsCertificateError,
    TlsNotSpoken,
    TlsOptions,
    TlsPinMismatch,
    TransportError,
    looks_like_tls,
    open_stream,
    speaks_tls,
)
from ghostline.errors import UsageError
from ghostline.tlspin import certificate_pin
from helpers import free_port, self_signed_certificate

# --- helpers ---------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy everything from `reader` to `writer` until EOF (an echo when both are one
    connection's)."""
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _start_echo(ssl_ctx: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(_pipe, "127.0.0.1", 0, ssl=ssl_ctx)
    return server, server.sockets[0].getsockname()[1]


class Socks5Server:
    """A tiny SOCKS5 server (no auth, or user/pass) that records what it was asked."""

    def __init__(self, *, credentials: tuple[str, str] | None = None, refuse: int = 0) -> None:
        self.credentials = credentials
        self.refuse = refuse
        self.requests: list[tuple[int, bytes, int]] = []  # (atyp, address, port)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ver, nmethods = await reader.readexactly(2)
            methods = await reader.readexactly(nmethods)
            assert ver == 5
            if self.credentials:
                assert 2 in methods
                writer.write(b"\x05\x02")
                _, ulen = await reader.readexactly(2)
                user = await reader.readexactly(ulen)
                (plen,) = await reader.readexactly(1)
                password = await reader.readexactly(plen)
                ok = (user.decode(), password.decode()) == self.credentials
                writer.write(b"\x01" + (b"\x00" if ok else b"\x01"))
                if not ok:
                    return
            else:
                writer.write(b"\x05\x00")
            _, cmd, _, atyp = await reader.readexactly(4)
            assert cmd == 1
            if atyp == 1:
                addr = await reader.readexactly(4)
                host = str(ipaddress.IPv4Address(addr))
            elif atyp == 3:
                (size,) = await reader.readexactly(1)
                addr = await reader.readexactly(size)
                host = "127.0.0.1" if addr == b"relay.example" else addr.decode()
            else:
                addr = await reader.readexactly(16)
                host = str(ipaddress.IPv6Address(addr))
            (port,) = struct.unpack(">H", await reader.readexactly(2))
            self.requests.append((atyp, addr, port))
            if self.refuse:
                writer.write(bytes((5, self.refuse, 0, 1)) + bytes(6))
                return
            up_reader, up_writer = await asyncio.open_connection(host, port)
            writer.write(b"\x05\x00\x00\x01" + bytes(4) + b"\x00\x00")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def tls_echo(tmp_path: Path) -> AsyncIterator[tuple[int, Path, bytes]]:
    cert, key, der = self_signed_certificate(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server, port = await _start_echo(ctx)
    yield port, cert, der
    server.close()


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"ping")
    await writer.drain()
    data = await reader.readexactly(4)
    writer.close()
    return data


# --- addresses -------------------------------------------------------------------


def test_relay_address_parses_host_port_ipv6_and_default_port() -> None:
    assert RelayAddress.parse("relay.example:9000") == RelayAddress("relay.example", 9000)
    assert RelayAddress.parse("[::1]:7") == RelayAddress("::1", 7)
    assert RelayAddress.parse("relay.example").port == 8080
    assert RelayAddress.parse("h:9000").presence == 9001
    assert RelayAddress.parse("h:9000", presence_port=5).presence == 5
    assert str(RelayAddress("::1", 7)) == "[::1]:7"


@pytest.mark.parametrize("bad", ["h:0", "h:70000", "h:x", ":80", "::1:80"])
def test_relay_address_refuses_bad_input_as_usage_error(bad: str) -> None:
    with pytest.raises(UsageError):
        RelayAddress.parse(bad)


def test_proxy_address_parses_socks5_urls_and_refuses_others() -> None:
    assert ProxyAddress.parse("socks5://127.0.0.1:9050") == ProxyAddress("127.0.0.1", 9050)
    assert ProxyAddress.parse("socks5h://u:p%40ss@h:1") == ProxyAddress("h", 1, "u", "p@ss")
    with pytest.raises(UsageError):
        ProxyAddress.parse("http://h:1")


# --- plain and SOCKS5 ------------------------------------------------------------


async def test_plain_connection_reaches_the_server() -> None:
    server, port = await _start_echo()
    try:
        assert await _roundtrip(*await open_stream("127.0.0.1", port)) == b"ping"
    finally:
        server.close()


async def test_unreachable_port_raises_transport_error_with_the_address() -> None:
    server, port = await _start_echo()
    server.close()
    await server.wait_closed()
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
        await open_stream("127.0.0.1", port, timeout=2)


async def test_socks5_connects_by_ip_through_the_proxy() -> None:
    server, port = await _start_echo()
    proxy = Socks5Server()
    proxy_port = await proxy.start()
    try:
        streams = await open_stream("127.0.0.1", port, proxy=f"socks5://127.0.0.1:{proxy_port}")
        assert await _roundtrip(*streams) == b"ping"
        assert proxy.requests == [(1, bytes([127, 0, 0, 1]), port)]
    finally:
        server.close()
        proxy.server.close()


async def test_socks5_sends_host_names_unresolved_with_credentials() -> None:
    server, port = await _start_echo()
    proxy = Socks5Server(credentials=("alice", "s3cret"))
    proxy_port = await proxy.start()
    try:
        url = f"socks5h://alice:s3cret@127.0.0.1:{proxy_port}"
        assert await _roundtrip(*await open_stream("relay.example", port, proxy=url)) == b"ping"
        assert proxy.requests == [(3, b"relay.example", port)]
    finally:
        server.close()
        proxy.server.close()


async def test_socks5_refusal_names_the_reason() -> None:
    proxy = Socks5Server(refuse=5)
    proxy_port = await proxy.start()
    try:
        with pytest.raises(TransportError, match="connection refused"):
            await open_stream("127.0.0.1", 9, proxy=f"socks5://127.0.0.1:{proxy_port}")
    finally:
        proxy.server.close()


async def test_socks5_wrong_password_is_refused() -> None:
    proxy = Socks5Server(credentials=("alice", "right"))
    proxy_port = await proxy.start()
    try:
        with pytest.raises(TransportError, match="user name and password"):
            await open_stream("127.0.0.1", 9, proxy=f"socks5://alice:wrong@127.0.0.1:{proxy_port}")
    finally:
        proxy.server.close()


# --- TLS -------------------------------------------------------------------------


async def test_tls_with_ca_file_verifies_the_server(tls_echo: tuple[int, Path, bytes]) -> None:
    port, cert, _ = tls_echo
    streams = await open_stream("127.0.0.1", port, tls=TlsOptions(ca_file=str(cert)))
    assert await _roundtrip(*streams) == b"ping"


async def test_tls_without_trust_fails_cleanly(tls_echo: tuple[int, Path, bytes]) -> None:
    port, _, _ = tls_echo
    with pytest.raises(TlsCertificateError, match="did not verify") as err:
        await open_stream("127.0.0.1", port, tls=TlsOptions())
    assert err.value.problem == "untrusted" and err.value.fatal


async def test_a_certificate_for_another_name_is_a_name_problem(
    tls_echo: tuple[int, Path, bytes],
) -> None:
    port, cert, _ = tls_echo
    tls = TlsOptions(ca_file=str(cert), server_name="relay.example")
    with pytest.raises(TlsCertificateError, match="not issued for relay.example") as err:
        await open_stream("127.0.0.1", port, tls=tls)
    assert err.value.problem == "name"


async def test_an_expired_certificate_is_an_expiry_problem(tmp_path: Path) -> None:
    cert, key, _ = self_signed_certificate(tmp_path, expired=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server, port = await _start_echo(ctx)
    try:
        with pytest.raises(TlsCertificateError, match="expired") as err:
            await open_stream("127.0.0.1", port, tls=TlsOptions(ca_file=str(cert)))
        assert err.value.problem == "expired"
    finally:
        server.close()


async def test_tls_against_a_plain_server_says_it_answered_without_tls() -> None:
    async def plain_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"\x00\x00\x00\x05\x8f\x00\x02no")  # a GhostLine ERROR frame
        writer.close()

    server = await asyncio.start_server(plain_error, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TlsNotSpoken, match="answered without TLS"):
            await open_stream("127.0.0.1", port, tls=TlsOptions(pin="ab" * 32))
        assert not await speaks_tls("127.0.0.1", port)
    finally:
        server.close()


async def test_a_tls_server_is_recognised_by_its_first_bytes_and_by_a_probe(
    tls_echo: tuple[int, Path, bytes],
) -> None:
    port, _, _ = tls_echo
    assert await speaks_tls("127.0.0.1", port)
    assert not await speaks_tls("127.0.0.1", free_port())
    assert looks_like_tls(b"\x15\x03\x03\x00\x02\x02\x46")  # an alert
    assert looks_like_tls(b"\x16\x03\x01\x02\x00")  # a handshake
    assert not looks_like_tls(b"\x00\x00\x00\x21\x81")  # a GhostLine CHALLENGE


async def test_a_proxy_that_is_down_is_named_as_the_proxy() -> None:
    port = free_port()
    with pytest.raises(ProxyUnreachable, match=f"the proxy 127.0.0.1:{port}") as err:
        await open_stream("127.0.0.1", 9, proxy=f"socks5://127.0.0.1:{port}")
    assert not err.value.fatal


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"\x05\xff", ProxyAuthError),
        (b"\x05\x02", ProxyAuthError),
        (b"HTTP/1.1 400", ProxyNotSocks),
    ],
)
async def test_a_proxy_wanting_a_password_or_not_socks5_is_a_fatal_proxy_error(
    answer: bytes, error: type[TransportError]
) -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.write(answer)
        await writer.drain()
        await reader.read(10)
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(error) as err:
            await open_stream("127.0.0.1", 9, proxy=f"socks5://127.0.0.1:{port}")
        assert err.value.fatal
    finally:
        server.close()


async def test_tls_pin_accepts_the_pinned_certificate(tls_echo: tuple[int, Path, bytes]) -> None:
    port, _, der = tls_echo
    pin = certificate_pin(der)
    streams = await open_stream("127.0.0.1", port, tls=TlsOptions(pin=pin))
    assert await _roundtrip(*streams) == b"ping"


async def test_tls_pin_mismatch_is_refused(tls_echo: tuple[int, Path, bytes]) -> None:
    port, _, _ = tls_echo
    with pytest.raises(TlsPinMismatch):
        await open_stream("127.0.0.1", port, tls=TlsOptions(pin="ab" * 32))


async def test_tls_through_socks5_with_pin(tls_echo: tuple[int, Path, bytes]) -> None:
    port, _, der = tls_echo
    proxy = Socks5Server()
    proxy_port = await proxy.start()
    try:
        streams = await open_stream(
            "127.0.0.1",
            port,
            tls=TlsOptions(pin=certificate_pin(der)),
            proxy=f"socks5://127.0.0.1:{proxy_port}",
        )
        assert await _roundtrip(*streams) == b"ping"
    finally:
        proxy.server.close()
