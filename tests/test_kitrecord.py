"""A damaged v1 kit header is noticed (kitrecord.py): the machine records each kit's
public header at first use, and every open compares. Through the CLI:
tests/e2e/test_e2e_damaged_kit.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ghostline.cli import main
from ghostline.errors import KitHeaderChangedError, RecoveryNeeded
from ghostline.pad.kit import Kit
from ghostline.state.kitrecord import record_path
from ghostline.state.member import Member
from helpers import flip_hex_digit, make_kit_set

NAMES = ["alice", "bob"]


def test_every_other_header_field_is_compared_too(tmp_path: Path) -> None:
    kits = make_kit_set(tmp_path / "kits", NAMES)
    Member.open(kits[0]).close()
    flip_hex_digit(kits[0], "verify_key", nth=1)  # bob's key, in alice's roster
    with pytest.raises(KitHeaderChangedError) as err:
        Member.open(kits[0])
    assert err.value.fields == ("members",)
    with Kit.open(kits[0], writable=False) as kit:
        record = record_path(kit.header)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert "signing_key" not in json.loads(record.read_text())  # no secret on disk twice


def test_a_kit_is_recorded_once_and_a_fresh_machine_has_nothing_to_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kits = make_kit_set(tmp_path / "kits", NAMES)
    with Member.open(kits[0]) as alice:
        alice.seal(b"x")
        record = record_path(alice.header)
    first = record.read_bytes()
    Member.open(kits[0]).close()
    assert record.read_bytes() == first
    flip_hex_digit(kits[1], "group")  # bob's kit was never used on this machine
    Member.open(kits[1]).close()
    monkeypatch.setenv("GHOSTLINE_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(RecoveryNeeded):  # no record and no state here: the kit's erasures speak
        Member.open(kits[0])


def test_a_damaged_record_is_one_line_saying_it_can_be_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kits = make_kit_set(tmp_path / "kits", NAMES)
    with Member.open(kits[0]) as alice:
        record = record_path(alice.header)
    record.write_text("[" * 100_000)  # not a record, and deep enough to break a parser
    with pytest.raises(SystemExit) as exited:
        main(["history", str(kits[0])])
    assert exited.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and str(record) in lines[0] and "Remove that file" in lines[1]
    record.unlink()
    Member.open(kits[0]).close()
    assert json.loads(record.read_text())["pad_id"] == alice.header.pad_id.hex()
