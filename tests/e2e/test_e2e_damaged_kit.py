"""End to end: a kit whose header was damaged after its first use on this machine is
refused in one line that names it as damaged, by every command, never offering
`pad recover` (which would burn its pad) and never sending into another room."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import ghostline
from test_e2e_errors import one_line_error

from helpers import RelayProcess, flip_hex_digit, kits_by_name, make_kit_set

NAMES = ["alice", "bob"]


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "relay.sqlite")
    yield process
    process.kill()


def test_a_used_kit_whose_pad_id_lost_a_digit_is_refused_as_damaged_never_recovered(
    tmp_path: Path, home: Path, relay: RelayProcess
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    alice = str(kits["alice"])
    done = ghostline("send", alice, "before", *relay.relay_args(), home=home)
    assert done.returncode == 0, done.stderr
    was, now = flip_hex_digit(kits["alice"], "pad_id")
    damaged = kits["alice"].read_bytes()
    for args in (
        ["send", alice, "after", *relay.relay_args()],
        ["listen", alice, *relay.relay_args(), "--timeout", "1"],
        ["history", alice],
        ["pad", "info", alice],
        ["pad", "recover", alice, "--yes"],
    ):
        done = ghostline(*args, home=home)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = one_line_error(done.stderr, alice, "looks damaged", f"pad_id was {was[:37]}")
        assert now[:37] in lines[0]
        assert "do not run `pad recover`" in lines[1]
        assert "Run `ghostline pad recover" not in done.stderr + done.stdout
    assert kits["alice"].read_bytes() == damaged  # recover wrote nothing
    done = ghostline(
        "listen", str(kits["bob"]), *relay.relay_args(), "--json", "--timeout", "2", "-q",
        home=tmp_path / "bob-home",
    )  # fmt: skip
    assert [json.loads(line)["text"] for line in done.stdout.splitlines()] == ["before"]


def test_an_unsent_kit_whose_pad_id_lost_a_digit_does_not_send_into_another_room(
    tmp_path: Path, home: Path, relay: RelayProcess
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    alice = str(kits["alice"])
    assert ghostline("history", alice, home=home).returncode == 0  # used here, sent nothing
    flip_hex_digit(kits["alice"], "pad_id")
    done = ghostline("send", alice, "lost in another room", *relay.relay_args(), home=home)
    assert done.returncode == 1, done.stderr
    one_line_error(done.stderr, "looks damaged", "pad_id")


def test_a_damaged_signing_key_is_named_as_damage_without_a_recovery_hint(
    tmp_path: Path, home: Path
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    flip_hex_digit(kits["alice"], "signing_key")
    alice = str(kits["alice"])
    for args in (["send", alice, "x", "--relay", "h"], ["pad", "info", alice]):
        done = ghostline(*args, home=home)
        assert done.returncode == 1
        one_line_error(done.stderr, alice, "damaged")
        assert "recover" not in done.stderr
