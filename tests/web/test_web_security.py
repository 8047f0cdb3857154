"""The local web server refuses what is not its own page: no token, a foreign Host, a
foreign Origin, a cross-site fetch, and a non-loopback address without the flag."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path

import aiohttp
import pytest
from web_support import WebProcess

from ghostline.errors import UsageError
from ghostline.web.hosts import allowed_name, local_addresses
from ghostline.web.security import CONTENT_SECURITY_POLICY, Gate
from helpers import RelayProcess

TOKEN = "k" * 43
GATE = Gate.for_address(TOKEN, "127.0.0.1", 8111)
GOOD = {"token": TOKEN, "host": "127.0.0.1:8111", "origin": None, "fetch_site": None}


def test_the_gate_lets_its_own_page_in() -> None:
    assert GATE.refusal(**GOOD, websocket=False) is None
    assert GATE.refusal(**{**GOOD, "host": "localhost:8111"}, websocket=False) is None
    page = {**GOOD, "origin": "http://127.0.0.1:8111", "fetch_site": "same-origin"}
    assert GATE.refusal(**page, websocket=True) is None


@pytest.mark.parametrize(
    ("change", "websocket", "reason"),
    [
        ({"token": None}, False, "token"),
        ({"token": TOKEN[:-1] + "x"}, False, "token"),
        ({"token": ""}, False, "token"),
        ({"host": "evil.example:8111"}, False, "Host"),
        ({"host": "127.0.0.1:8112"}, False, "Host"),
        ({"host": None}, False, "Host"),
        ({"origin": "http://evil.example"}, False, "Origin"),
        ({"origin": "http://127.0.0.1:9999"}, True, "Origin"),
        ({"origin": "null"}, True, "Origin"),
        ({"origin": None}, True, "Origin"),
        ({"fetch_site": "cross-site"}, False, "cross-site"),
        ({"fetch_site": "same-site"}, False, "cross-site"),
    ],
)
def test_the_gate_refuses_anything_else(
    change: dict[str, str | None], websocket: bool, reason: str
) -> None:
    refusal = GATE.refusal(**{**GOOD, **change}, websocket=websocket)  # type: ignore[arg-type]
    assert refusal is not None and reason in refusal
    assert TOKEN not in refusal


def test_a_remote_address_answers_only_to_its_own_name() -> None:
    gate = Gate.for_address(TOKEN, "192.0.2.7", 8111)
    assert gate.answers_to("192.0.2.7:8111")
    assert not gate.answers_to("127.0.0.1:8111") and not gate.answers_to("localhost:8111")


LOCAL = [ip_address("127.0.0.1"), ip_address("192.0.2.7"), ip_address("fd00::7")]


def test_on_every_interface_the_gate_answers_to_this_machines_addresses_only() -> None:
    gate = Gate.for_address(TOKEN, "0.0.0.0", 8111, local=LOCAL)
    for host in ("127.0.0.1:8111", "192.0.2.7:8111", "localhost:8111", "LOCALHOST:8111"):
        assert gate.answers_to(host), host
        assert gate.is_own_origin(f"http://{host}")
    for host in (
        "rebind.example:8111",  # a web site's name pointed at this machine (DNS rebinding)
        "192.0.2.8:8111",  # not an address of this machine
        "[fd00::7]:8111",  # IPv6: 0.0.0.0 is not listening there
        "192.0.2.7:8112",
        "192.0.2.7",  # port 80
        "192.0.2.7:8111@rebind.example",
        "192.0.2.7:8111/x",
        "",
    ):
        assert not gate.answers_to(host), host
    assert not gate.is_own_origin("https://192.0.2.7:8111")
    assert Gate.for_address(TOKEN, "::", 8111, local=LOCAL).answers_to("[fd00::7]:8111")


def test_names_given_with_allow_host_are_answered_to_and_no_other() -> None:
    allow = [allowed_name("Ghost.Example"), allowed_name("198.51.100.4")]
    gate = Gate.for_address(TOKEN, "0.0.0.0", 8111, local=LOCAL, allow=allow)
    assert gate.answers_to("ghost.example:8111") and gate.answers_to("GHOST.example.:8111")
    assert gate.answers_to("198.51.100.4:8111")  # e.g. the address a router forwards
    assert not gate.answers_to("other.example:8111")
    for bad in ("http://ghost.example", "ghost.example:8111", "a_b", "", "-x.example"):
        with pytest.raises(UsageError):
            allowed_name(bad)


def test_served_on_every_interface_it_answers_its_addresses_and_refuses_other_names(
    relay: RelayProcess, kits: dict[str, Path], start_web: Callable[..., WebProcess]
) -> None:
    web = start_web(
        kits["alice"], relay.relay_args(), "alice", "--host", "0.0.0.0", "--allow-remote"
    )
    # The address printed is one the page can be opened at: not 0.0.0.0.
    assert web.host != "0.0.0.0"
    assert ip_address(web.host) in local_addresses()
    page = f"/?t={web.token}"
    assert web.request("GET", page, {"Host": f"127.0.0.1:{web.port}"}).status == 200
    assert web.request("GET", page, {"Host": f"{web.host}:{web.port}"}).status == 200
    assert web.request("GET", page, {"Host": f"rebind.example:{web.port}"}).status == 403


def test_a_name_given_with_allow_host_is_answered_and_printed(
    relay: RelayProcess, kits: dict[str, Path], start_web: Callable[..., WebProcess]
) -> None:
    web = start_web(
        kits["alice"], relay.relay_args(), "alice", "--host", "0.0.0.0", "--allow-remote",
        "--allow-host", "ghost.example",
    )  # fmt: skip
    assert web.host == "ghost.example"
    page = f"/?t={web.token}"
    assert web.request("GET", page, {"Host": f"ghost.example:{web.port}"}).status == 200
    assert web.request("GET", page, {"Host": f"rebind.example:{web.port}"}).status == 403


def test_allow_host_needs_allow_remote(kits: dict[str, Path], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ghostline", "web", str(kits["alice"]), "--relay",
         "127.0.0.1:9", "--allow-host", "ghost.example", "--no-browser"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "GHOSTLINE_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode == 2
    assert "--allow-host goes with --allow-remote" in done.stderr


@pytest.fixture
def web(
    relay: RelayProcess, kits: dict[str, Path], start_web: Callable[..., WebProcess]
) -> WebProcess:
    return start_web(kits["alice"], relay.relay_args(), "alice")


def test_every_request_needs_the_token_the_right_host_and_origin(web: WebProcess) -> None:
    host = f"127.0.0.1:{web.port}"
    ok = web.request("GET", f"/?t={web.token}", {"Host": host})
    assert ok.status == 200
    assert ok.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert ok.headers["X-Frame-Options"] == "DENY"
    assert ok.headers.get("Set-Cookie") is None
    assert web.request("GET", f"/static/app.js?t={web.token}", {"Host": host}).status == 200

    refused = [
        web.request("GET", "/", {"Host": host}),
        web.request("GET", "/static/app.js", {"Host": host}),
        web.request("GET", f"/?t={web.token[:-2]}", {"Host": host}),
        web.request("GET", f"/?t={web.token}", {"Host": f"evil.example:{web.port}"}),
        web.request("GET", f"/?t={web.token}", {"Host": host, "Origin": "http://evil.example"}),
        web.request("GET", f"/?t={web.token}", {"Host": host, "Sec-Fetch-Site": "cross-site"}),
        web.request(
            "POST", f"/upload?t={web.token}&name=x", {"Host": host, "Origin": "http://evil.example"},
            b"data",
        ),
    ]  # fmt: skip
    assert [r.status for r in refused] == [403] * len(refused)
    assert all(r.headers["X-Frame-Options"] == "DENY" for r in refused)
    assert not list(web.home.joinpath("downloads").glob("*"))  # nothing uploaded or saved


async def _websocket_status(web: WebProcess, origin: str | None, token: str) -> int:
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(
                f"http://127.0.0.1:{web.port}/ws?t={token}", headers=headers
            ) as ws:
                message = await ws.receive_json(timeout=30)
                assert message["type"] == "snapshot"
                return 101
        except aiohttp.WSServerHandshakeError as err:
            return err.status


def test_a_websocket_from_a_foreign_origin_is_refused(web: WebProcess) -> None:
    own = f"http://127.0.0.1:{web.port}"
    tries = [
        (own, web.token),
        ("http://evil.example", web.token),
        (f"http://localhost:{web.port + 1}", web.token),
        (None, web.token),
        (own, "wrong"),
    ]
    statuses = [asyncio.run(_websocket_status(web, origin, token)) for origin, token in tries]
    assert statuses == [101, 403, 403, 403, 403]


def test_the_token_never_reaches_a_log(web: WebProcess) -> None:
    host = f"127.0.0.1:{web.port}"
    web.request("GET", f"/?t={web.token}", {"Host": host})
    web.request("GET", f"/nowhere?t={web.token}", {"Host": host})
    web.request("GET", f"/?t={web.token}x", {"Host": host})
    web.request("GET", f"/?t={web.token}", {"Host": "evil.example"})
    assert web.stop() == 0
    assert any("refused GET /: missing or wrong token" in line for line in web.stderr)
    assert any("foreign Host" in line for line in web.stderr)
    assert not [line for line in web.stderr if web.token[:12] in line]
    # stdout has it once: the address the person opens.
    assert [line for line in web.stdout if web.token in line] == [web.url_line]


def test_a_non_loopback_host_needs_the_explicit_flag(kits: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home-remote"
    done = subprocess.run(
        [sys.executable, "-m", "ghostline", "web", str(kits["alice"]), "--relay",
         "127.0.0.1:9", "--host", "0.0.0.0", "--no-browser"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "GHOSTLINE_HOME": str(home)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "--allow-remote" in done.stderr
    assert not (home / "data").exists()  # refused before the kit was opened


def test_a_refused_requests_path_is_logged_escaped_on_one_line(web: WebProcess) -> None:
    host = f"127.0.0.1:{web.port}"
    web.request("GET", "/x%0A[12:00:00]%20alice:%20hi%1B[2J" + "y" * 500, {"Host": host})
    assert web.stop() == 0
    (line,) = [line for line in web.stderr if "refused GET /x" in line]
    assert "/x\\n[12:00:00] alice: hi\\x1b[2J" in line and len(line) < 300
    assert not any(line.startswith("[12:00:00]") or "\x1b" in line for line in web.stderr)
