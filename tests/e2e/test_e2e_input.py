"""End to end: bad command-line input and unusable kit files.

A usage error (exit 2) means that nothing was sealed: every option is checked before the
kit opens, and text that is not UTF-8 is refused before it is sealed. A kit that cannot
be read or written is one line, never a usage banner.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_support import GHOSTLINE, env_for, ghostline, history
from test_e2e_errors import one_line_error

from helpers import RelayProcess, kits_by_name, make_kit_set

NAMES = ["alice", "bob"]


def run(*args: str | bytes, home: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """`ghostline ARGS` with raw bytes allowed in the arguments and on stdin."""
    done = subprocess.run(
        [*GHOSTLINE, *args], input=stdin, capture_output=True, env=env_for(home), timeout=60
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def listen_texts(kit: Path, relay: RelayProcess, home: Path, count: int) -> list[str]:
    done = ghostline(
        "listen", str(kit), *relay.relay_args(), "--json", "--count", str(count),
        "--timeout", "30", "-q", home=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [line.split('"text": "')[1].split('"')[0] for line in done.stdout.splitlines()]


def test_a_send_refused_for_a_bad_option_seals_nothing(tmp_path: Path, home: Path) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    alice = str(kits["alice"])
    not_a_ca = tmp_path / "not-a-ca.pem"
    not_a_ca.write_text("this is not a certificate\n")
    relay = RelayProcess(tmp_path / "relay.sqlite")
    good = relay.relay_args()
    try:
        assert ghostline("send", alice, "first", *good, home=home).returncode == 0
        for bad in (
            ["--relay", "127.0.0.1:notaport"],
            ["--relay", "127.0.0.1:70000"],
            ["--relay", "127.0.0.1:0"],
            [*good, "--tls-pin", "abc"],
            [*good, "--proxy", "http://127.0.0.1:3128"],
            [*good, "--tls-ca", str(not_a_ca)],
            [],  # no --relay and no GHOSTLINE_RELAY
        ):
            done = ghostline("send", alice, "must never be sent", *bad, home=home)
            assert done.returncode == 2, (bad, done.stderr)
            one_line_error(done.stderr)
        assert ghostline("send", alice, "second", *good, home=home).returncode == 0
        assert listen_texts(kits["bob"], relay, home, 2) == ["first", "second"]
    finally:
        relay.kill()
    sent = [(h["counter"], h["text"], h["state"]) for h in history(kits["alice"], home)]
    assert sent == [(0, "first", "stored"), (1, "second", "stored")]


def test_bad_options_are_found_before_the_kit_and_its_state(tmp_path: Path, home: Path) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    alice = str(kits["alice"])
    relay = RelayProcess(tmp_path / "relay.sqlite")
    try:
        assert ghostline("send", alice, "hi", *relay.relay_args(), home=home).returncode == 0
    finally:
        relay.kill()
    shutil.rmtree(home / "data" / "state")  # opening the kit now fails: state missing
    for command in (["send", alice, "x"], ["listen", alice], ["chat", alice], ["web", alice]):
        done = ghostline(*command, "--relay", "127.0.0.1:notaport", home=home)
        assert done.returncode == 2, (command, done.stderr)
        one_line_error(done.stderr, "notaport")
    done = ghostline("listen", alice, "--relay", "127.0.0.1:1", "--tls-pin", "abc", home=home)
    assert done.returncode == 2
    one_line_error(done.stderr, "--tls-pin")


def test_text_that_is_not_utf8_is_one_line_and_seals_nothing(tmp_path: Path, home: Path) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    alice = str(kits["alice"])
    offline = ["--relay", "127.0.0.1:1", "--timeout", "0.1"]
    done = run("send", alice, *offline, "-", stdin=b"caf\xe9", home=home)
    assert done.returncode == 2
    lines = one_line_error(done.stderr, "stdin is not UTF-8", "0xe9", "nothing was sealed")
    assert "as a file" in lines[1]
    done = run("send", alice, *offline, b"caf\xe9 au lait", home=home)
    assert done.returncode == 2
    one_line_error(done.stderr, "not UTF-8", "0xe9", "nothing was sealed")
    assert history(kits["alice"], home) == []


def test_send_lines_stops_at_a_line_that_is_not_utf8_and_sends_what_came_before(
    tmp_path: Path, home: Path
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    try:
        done = run(
            "send", str(kits["alice"]), *relay.relay_args(), "-", "--lines",
            stdin=b"good\ncaf\xe9\nafter\n", home=home,
        )  # fmt: skip
        assert done.returncode == 1  # not 2: one line was sealed
        status = [line for line in done.stderr.splitlines() if line.startswith("ghostline: sent")]
        assert status == ["ghostline: sent: 1 message accepted by the relay"]
        rest = "\n".join(line for line in done.stderr.splitlines() if line not in status)
        one_line_error(rest, "line 2 of stdin is not UTF-8", "the lines after it were not sealed")
        assert listen_texts(kits["bob"], relay, home, 1) == ["good"]
    finally:
        relay.kill()
    assert [h["text"] for h in history(kits["alice"], home)] == ["good"]


def test_send_lines_stops_at_a_line_too_large_for_a_message_and_says_what_was_sealed(
    tmp_path: Path, home: Path
) -> None:
    # room in the pad for it: what refuses it is the relay's frame limit, not the pad
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES, slice_len=2 << 20, auth_keys=64))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    huge = b"x" * ((1 << 20) + 500) + b"\n"  # more than any relay frame carries
    try:
        done = run(
            "send", str(kits["alice"]), *relay.relay_args(), "-", "--lines",
            stdin=b"first\n" + huge + b"after\n", home=home,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr  # not 2: the first line was sealed
        rest = "\n".join(
            line for line in done.stderr.splitlines() if not line.startswith("ghostline: sent")
        )
        one_line_error(rest, "line 2 of stdin is too large", "the lines after it were not sealed")
        assert listen_texts(kits["bob"], relay, home, 1) == ["first"]
        alone = run(
            "send", str(kits["alice"]), *relay.relay_args(), "-", "--lines",
            stdin=huge, home=home,
        )  # fmt: skip
        assert alone.returncode == 2, alone.stderr  # nothing sealed: a usage error
    finally:
        relay.kill()
    assert [h["text"] for h in history(kits["alice"], home)] == ["first"]


def test_the_relay_can_come_from_ghostline_relay_and_needs_no_port(
    tmp_path: Path, home: Path
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    env = {**env_for(home), "GHOSTLINE_RELAY": f"127.0.0.1:{relay.relay_port}"}
    try:
        done = subprocess.run(
            [*GHOSTLINE, "send", str(kits["alice"]), "from the environment",
             "--presence-port", str(relay.presence_port)],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert listen_texts(kits["bob"], relay, home, 1) == ["from the environment"]
    finally:
        relay.kill()
    done = ghostline("send", "--help", home=home)
    assert "GHOSTLINE_RELAY" in done.stdout
    from ghostline.cli.connect import connection_settings

    opts = {"relays": ("relay.example",), "presence_port": None, "tls": False,
            "tls_ca": None, "tls_pin": None, "proxy": None}  # fmt: skip
    assert connection_settings(opts).relays[0].port == 8080


# Root reads and writes any file whatever its mode: run it without the two capabilities
# that let it (setpriv, util-linux), so that permission bits hold as for anyone else.
AS_ANYONE = (
    ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"]
    if os.geteuid() == 0
    else []
)


def ghostline_as_anyone(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    if AS_ANYONE and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits do not apply")
    return subprocess.run(
        [*AS_ANYONE, *GHOSTLINE, *args], capture_output=True, text=True, env=env_for(home),
        timeout=60,
    )  # fmt: skip


def test_a_read_only_kit_is_one_line_that_says_it_must_be_writable(
    tmp_path: Path, home: Path
) -> None:
    kit = make_kit_set(tmp_path / "kits", NAMES)[0]
    kit.chmod(0o400)
    for args in (["send", str(kit), "hi", "--relay", "127.0.0.1:1"], ["history", str(kit)]):
        done = ghostline_as_anyone(*args, home=home)
        assert done.returncode == 1
        lines = one_line_error(done.stderr, "must be writable", "erases")
        assert "chmod u+w" in lines[1]
    done = ghostline_as_anyone("pad", "info", str(kit), home=home)  # reading is enough
    assert done.returncode == 0, done.stderr


def test_a_folder_given_as_kit_is_one_line_not_a_usage_banner(tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "kits"
    make_kit_set(folder, NAMES)
    for args in (["pad", "info", str(folder)], ["send", str(folder), "hi", "--relay", "h"]):
        done = ghostline(*args, home=home)
        assert done.returncode == 1, done.stderr
        one_line_error(done.stderr, "not a kit file")


def test_an_unreadable_kit_is_one_line_not_a_usage_banner(tmp_path: Path, home: Path) -> None:
    kit = make_kit_set(tmp_path / "kits", NAMES)[0]
    kit.chmod(0o000)
    for args in (["pad", "info", str(kit)], ["listen", str(kit), "--relay", "h"]):
        done = ghostline_as_anyone(*args, home=home)
        assert done.returncode == 1
        one_line_error(done.stderr, "permission denied")
