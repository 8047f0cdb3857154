"""TLS mistakes, seen from a real `ghostline relay` (issue 9 item 14): the relay prints
the pin clients need, and a client with TLS where there is none (or none where there
is) is told so, and the relay logs why, instead of nothing or a 369 MB "frame"."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import pytest
from relaytest_client import Group, RawClient, RelayError, joined

from ghostline.protocol.frames import REASON_NOT_TLS, REASON_TLS_ONLY, ErrorCode, decode_error
from helpers import self_signed_certificate
from waiting import until, wait_until

PIN_LINE = "ghostline relay: TLS certificate pin (for --tls-pin): "


def logged(relay, text: str) -> bool:
    return any(text in line for line in list(relay.stderr_lines))


@pytest.fixture
def tls_relay(relay_process, tmp_path):
    cert, key, der = self_signed_certificate(tmp_path)
    relay = relay_process(tmp_path / "relay.sqlite", "--tls-cert", str(cert), "--tls-key", str(key))
    return relay, cert, der


def test_the_relay_prints_the_pin_of_its_certificate(tls_relay):
    relay, cert, der = tls_relay
    pins = [line.strip() for line in relay.stderr_lines if line.startswith(PIN_LINE)]
    assert pins == [PIN_LINE + hashlib.sha256(der).hexdigest()]

    async def pinned_join() -> None:  # what a client checks its --tls-pin against
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        client = await joined(relay.relay_port, Group(2), 0, tls=ctx)
        peer = client.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert hashlib.sha256(peer).hexdigest() == pins[0].removeprefix(PIN_LINE)
        await client.close()

    asyncio.run(pinned_join())


def test_a_plain_client_on_a_tls_port_is_told_in_plain_and_logged(tls_relay):
    relay, _, _ = tls_relay

    async def plain(port: int) -> RelayError:
        client = await RawClient.connect(port)
        with pytest.raises(RelayError) as refused:
            await client.join(Group(2), 0)
        await client.close()
        return refused.value

    for port in (relay.relay_port, relay.presence_port):
        refusal = asyncio.run(plain(port))
        assert (refusal.code, refusal.reason) == (ErrorCode.BAD_HANDSHAKE, REASON_TLS_ONLY)
    wait_until(lambda: logged(relay, f'reason="{REASON_TLS_ONLY}"'), what="the refusal logged")


def test_a_client_that_rejects_the_certificate_makes_the_relay_log_why(tls_relay, tmp_path):
    relay, _, _ = tls_relay
    (tmp_path / "other").mkdir()
    other_ca, _, _ = self_signed_certificate(tmp_path / "other")

    async def distrusting() -> None:
        ctx = ssl.create_default_context(cafile=str(other_ca))
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", relay.relay_port, ssl=ctx, server_hostname="localhost"
            )

    asyncio.run(distrusting())
    # (a client that sends its alert is logged with it, e.g. TLSV1_ALERT_UNKNOWN_CA;
    # Python's asyncio closes without one)
    wait_until(
        lambda: logged(relay, 'reason="TLS handshake failed: the client closed the connection'),
        what="the failed handshake logged with its reason",
    )


def test_a_tls_client_on_a_plain_port_is_answered_and_logged_not_read_as_a_frame(
    relay_process, tmp_path
):
    relay = relay_process(tmp_path / "relay.sqlite")

    async def tls_client() -> None:
        ctx = ssl.create_default_context()
        with pytest.raises(ssl.SSLError):
            await asyncio.open_connection(
                "127.0.0.1", relay.relay_port, ssl=ctx, server_hostname="localhost"
            )

    async def client_hello_bytes() -> tuple[int, str]:
        # What a TLS client sends first (a TLS 1.0 record header, handshake type
        # ClientHello), read back as GhostLine frames: an ERROR the client can show.
        client = await RawClient.connect(relay.presence_port)
        await client.send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32))
        frame = await client.recv()
        await client.expect_closed()
        return decode_error(frame.body)

    asyncio.run(tls_client())
    assert asyncio.run(client_hello_bytes()) == (ErrorCode.BAD_HANDSHAKE, REASON_NOT_TLS)
    wait_until(lambda: logged(relay, f'reason="{REASON_NOT_TLS}"'), what="the refusal logged")
    assert not logged(relay, "exceeds")  # no "frame of 369098752 bytes"


async def test_silent_connections_to_a_tls_port_count_against_the_limits(make_relay, tmp_path):
    cert, key, _ = self_signed_certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    relay = await make_relay(ssl_context=server_ctx, max_connections_per_address=3)
    silent = [await asyncio.open_connection("127.0.0.1", relay.relay_port) for _ in range(3)]
    # Nothing sent yet, no handshake: still they hold the address's three places.
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.relay_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
    writer.close()
    for _, w in silent:
        w.close()
    await until(lambda: relay.admission._early == 0, what="the silent ones forgotten")
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    client = await joined(relay.relay_port, Group(2), 0, tls=ctx)  # room again
    await client.close()
