"""End to end: what `ghostline send` says when the connection cannot work as asked (TLS,
proxy), while the relay is down, and while it keeps failing. A certificate or proxy
problem stops at once with the hint that fits; it is not retried until the timeout
under a hint about the relay address."""

from __future__ import annotations

import asyncio
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_support import GHOSTLINE, env_for, ghostline

from fake_relay import FakeRelay, FakeSession
from ghostline.protocol.frames import ErrorCode, encode_error
from ghostline.tlspin import certificate_pin
from helpers import RelayProcess, free_port, kits_by_name, make_kit_set, self_signed_certificate
from waiting import until

NAMES = ["alice", "bob"]
# Long enough that a run which merely retried would say "within 60 s": these must stop
# on the first attempt instead.
NO_RETRY = ["--timeout", "60"]


def error_lines(stderr: str) -> tuple[str, str]:
    """The error line and the hint line (the last two lines; notices may come before)."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) >= 2, stderr
    error, hint = lines[-2], lines[-1]
    assert error.startswith("ghostline: error: "), stderr
    assert hint.startswith("ghostline: hint: "), stderr
    return error, hint


@pytest.fixture
def kits(tmp_path: Path) -> dict[str, Path]:
    return kits_by_name(make_kit_set(tmp_path / "kits", NAMES))


@pytest.fixture
def tls_relay(tmp_path: Path) -> Iterator[tuple[RelayProcess, Path, bytes]]:
    cert, key, der = self_signed_certificate(tmp_path)
    relay = RelayProcess(tmp_path / "relay.sqlite", "--tls-cert", str(cert), "--tls-key", str(key))
    yield relay, cert, der
    relay.kill()


@pytest.fixture
def plain_relay(tmp_path: Path) -> Iterator[RelayProcess]:
    relay = RelayProcess(tmp_path / "plain.sqlite")
    yield relay
    relay.kill()


def test_a_certificate_no_trusted_ca_signed_stops_at_once_with_the_tls_ca_hint(
    kits: dict[str, Path], home: Path, tls_relay: tuple[RelayProcess, Path, bytes]
) -> None:
    relay, _, _ = tls_relay
    done = ghostline(
        "send", str(kits["alice"]), "hi", *relay.relay_args(), "--tls", *NO_RETRY, home=home
    )
    assert done.returncode == 1
    error, hint = error_lines(done.stderr)
    assert "TLS certificate" in error and "did not verify" in error
    assert "--tls-ca" in hint and "--tls-pin" in hint
    assert "--relay address" not in done.stderr


def test_a_pin_mismatch_stops_at_once_with_the_pin_hint(
    kits: dict[str, Path], home: Path, tls_relay: tuple[RelayProcess, Path, bytes]
) -> None:
    relay, _, _ = tls_relay
    pin = "ab" * 32
    args = [*relay.relay_args(), "--tls-pin", pin, *NO_RETRY]
    done = ghostline("send", str(kits["alice"]), "hi", *args, home=home)
    assert done.returncode == 1
    error, hint = error_lines(done.stderr)
    assert "fingerprint" in error and "--tls-pin" in hint


def test_the_right_pin_and_the_right_ca_both_connect(
    kits: dict[str, Path], home: Path, tls_relay: tuple[RelayProcess, Path, bytes]
) -> None:
    relay, cert, der = tls_relay
    for trust in (["--tls-pin", certificate_pin(der)], ["--tls-ca", str(cert)]):
        done = ghostline("send", str(kits["alice"]), "hi", *relay.relay_args(), *trust, home=home)
        assert done.returncode == 0, done.stderr
        assert "accepted by the relay" in done.stderr


def test_a_plain_client_against_a_tls_relay_is_told_to_add_tls(
    kits: dict[str, Path], home: Path, tls_relay: tuple[RelayProcess, Path, bytes]
) -> None:
    relay, _, _ = tls_relay
    done = ghostline("send", str(kits["alice"]), "hi", *relay.relay_args(), *NO_RETRY, home=home)
    assert done.returncode == 1
    error, hint = error_lines(done.stderr)
    assert "speaks TLS" in error and "add --tls" in hint


def test_a_tls_client_against_a_plain_relay_is_told_to_leave_tls_out(
    kits: dict[str, Path], home: Path, plain_relay: RelayProcess
) -> None:
    args = [*plain_relay.relay_args(), "--tls-pin", "ab" * 32, *NO_RETRY]
    done = ghostline("send", str(kits["alice"]), "hi", *args, home=home)
    assert done.returncode == 1
    error, hint = error_lines(done.stderr)
    assert "answered without TLS" in error and "leave out --tls" in hint


class _FixedAnswer(socketserver.BaseRequestHandler):
    answer = b""

    def handle(self) -> None:
        self.request.recv(64)
        self.request.sendall(self.answer)


@pytest.fixture
def answering() -> Iterator[Callable[[bytes], int]]:
    """Start a TCP server on 127.0.0.1 that answers every connection with fixed bytes."""
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(answer: bytes) -> int:
        handler = type("Handler", (_FixedAnswer,), {"answer": answer})
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("answer", "says", "hint"),
    [
        (b"\x05\xff", "accepts none of our authentication", "USER:PASSWORD"),
        (b"\x05\x02", "wants a user name and password", "USER:PASSWORD"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "is not a SOCKS5 proxy", "SOCKS5 proxy"),
    ],
)
def test_a_proxy_that_wants_a_password_or_is_not_socks5_gets_its_own_message(
    kits: dict[str, Path],
    home: Path,
    answering: Callable[[bytes], int],
    answer: bytes,
    says: str,
    hint: str,
) -> None:
    proxy = f"socks5://127.0.0.1:{answering(answer)}"
    relay = f"127.0.0.1:{free_port()}"
    args = ["--relay", relay, "--proxy", proxy, *NO_RETRY]
    done = ghostline("send", str(kits["alice"]), "hi", *args, home=home)
    assert done.returncode == 1
    error, hint_line = error_lines(done.stderr)
    assert says in error and hint in hint_line
    assert "--relay address" not in done.stderr


def test_a_proxy_that_is_down_is_named_and_retried_with_a_proxy_hint(
    kits: dict[str, Path], home: Path
) -> None:
    proxy = f"socks5://127.0.0.1:{free_port()}"
    args = ["--relay", f"127.0.0.1:{free_port()}", "--proxy", proxy, "--timeout", "1"]
    done = ghostline("send", str(kits["alice"]), "hi", *args, home=home)
    assert done.returncode == 1
    error, hint = error_lines(done.stderr)
    assert "cannot connect to the proxy" in error
    assert "Check --proxy" in hint and "outbox" in hint
    assert "--relay address" not in done.stderr


def test_send_says_it_is_retrying_and_how_to_stop_while_the_relay_is_down(
    kits: dict[str, Path], home: Path
) -> None:
    relay = f"127.0.0.1:{free_port()}"
    done = ghostline(
        "send", str(kits["alice"]), "hi", "--relay", relay, "--timeout", "4", home=home
    )
    assert done.returncode == 1
    notice = [line for line in done.stderr.splitlines() if "retrying" in line]
    assert len(notice) == 1, done.stderr
    assert "connection refused" in notice[0]  # the reason
    assert "Ctrl-C" in notice[0] and "outbox" in notice[0]
    error, _ = error_lines(done.stderr)
    assert "could not reach the relay within 4 s" in error


def test_send_says_nothing_of_retrying_when_the_relay_takes_the_message(
    kits: dict[str, Path], home: Path, plain_relay: RelayProcess
) -> None:
    done = ghostline(
        "send", str(kits["alice"]), "hi", *plain_relay.relay_args(), "--timeout", "60", home=home
    )
    assert done.returncode == 0, done.stderr
    assert "retrying" not in done.stderr


async def test_send_says_when_the_relay_fails_on_every_join_and_keeps_the_message(
    kits: dict[str, Path], home: Path
) -> None:
    relay = FakeRelay(before_welcome=lambda i, h: encode_error(ErrorCode.INTERNAL, "disk full"))
    address = await relay.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            *GHOSTLINE, "send", str(kits["alice"]), "hi", "--relay", str(address),
            "--timeout", "3",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env_for(home),
        )  # fmt: skip
        _, stderr_bytes = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await relay.close()
    stderr = stderr_bytes.decode()
    assert proc.returncode == 1, stderr
    warning = [line for line in stderr.splitlines() if "internal error" in line]
    assert len(warning) == 1, stderr
    assert "3 times in a row (disk full)" in warning[0] and "outbox" in warning[0]
    assert relay.connections() > 3  # and it kept asking after the warning


async def test_listen_against_a_relay_that_fails_after_every_welcome_says_it_once(
    kits: dict[str, Path], home: Path
) -> None:
    # A relay that names a new store on every connection and then refuses: listen used
    # to reconnect every 0.1-0.2 s printing three lines each time.
    async def refuse(session: FakeSession) -> None:
        relay.store_id = bytes([session.index + 1]) * 16
        session.send(encode_error(ErrorCode.RELAY_FULL, "relay full: too many connections"))

    relay = FakeRelay(refuse)
    address = await relay.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            *GHOSTLINE, "listen", str(kits["bob"]), "--relay", str(address),
            "--presence-port", str(address.presence),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env_for(home),
        )  # fmt: skip
        await until(lambda: relay.connections() >= 5, timeout=60, what="five connections")
        proc.terminate()
        _, stderr_bytes = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await relay.close()
    stderr = stderr_bytes.decode()
    lines = stderr.splitlines()
    assert len([line for line in lines if "connected to" in line]) == 1, stderr
    assert len([line for line in lines if "another message store" in line]) == 1, stderr
    assert len([line for line in lines if "reconnecting to" in line]) == 1, stderr
