"""End to end: every failure a person can meet is one line (and a hint), never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

from e2e_support import ghostline

from helpers import RelayProcess, free_port, kits_by_name, make_kit_set

NAMES = ["alice", "bob", "carol"]


def one_line_error(stderr: str, *needles: str) -> list[str]:
    lines = stderr.splitlines()
    assert "Traceback" not in stderr
    assert lines and lines[0].startswith("ghostline: error: "), stderr
    assert all(line.startswith("ghostline: hint: ") for line in lines[1:]), stderr
    assert len(lines) <= 2, stderr
    for needle in needles:
        assert needle in stderr, stderr
    return lines


def test_a_missing_kit_is_one_line(tmp_path: Path, home: Path) -> None:
    kit = str(tmp_path / "nope.ghostkit")
    done = ghostline("send", kit, "hi", "--relay", "127.0.0.1:1", home=home)
    assert done.returncode == 1
    one_line_error(done.stderr, "no such kit file")


def test_a_corrupt_kit_is_one_line(tmp_path: Path, home: Path) -> None:
    kit = tmp_path / "bad.ghostkit"
    kit.write_bytes(b"GHSTKIT1 this is not a kit")
    for args in (["listen", str(kit), "--relay", "127.0.0.1:1"], ["history", str(kit)]):
        done = ghostline(*args, home=home)
        assert done.returncode == 1
        one_line_error(done.stderr, str(kit))


def test_an_unreachable_relay_is_one_line_with_a_hint(tmp_path: Path, home: Path) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    relay = f"127.0.0.1:{free_port()}"
    done = ghostline(
        "send", str(kits["alice"]), "hi", "--relay", relay, "--timeout", "1", home=home
    )
    assert done.returncode == 1
    one_line_error(done.stderr, "could not reach the relay", "outbox")
    done = ghostline(
        "listen", str(kits["bob"]), "--relay", relay, "--timeout", "1", "-q", home=home
    )
    assert done.returncode == 1
    one_line_error(done.stderr, "could not reach the relay")


def test_a_kit_whose_room_the_relay_knows_with_another_roster_is_refused(
    tmp_path: Path, home: Path
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    try:
        done = ghostline("send", str(kits["alice"]), "hi", *relay.relay_args(), home=home)
        assert done.returncode == 0, done.stderr
        from ghostline.pad.kit import Kit

        with Kit.open(kits["alice"], writable=False) as kit:
            pad_id = kit.pad_id
        others = kits_by_name(make_kit_set(tmp_path / "others", NAMES, pad_id=pad_id))
        other_home = tmp_path / "other-home"
        done = ghostline("send", str(others["alice"]), "hi", *relay.relay_args(), home=other_home)
        assert done.returncode == 1
        one_line_error(done.stderr, "code 4", "another member list")
        done = ghostline("listen", str(others["bob"]), *relay.relay_args(), "-q", home=other_home)
        assert done.returncode == 1
        # What may really have happened (someone registered the room first: squat.py),
        # and what the group can do.
        one_line_error(done.stderr, "code 4", "registered it first")
        assert "new kit set" in done.stderr and "operator removes the room" in done.stderr
    finally:
        relay.kill()


def test_a_missing_state_database_is_one_line_with_a_hint(tmp_path: Path, home: Path) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    try:
        done = ghostline("send", str(kits["alice"]), "hi", *relay.relay_args(), home=home)
        assert done.returncode == 0, done.stderr
    finally:
        relay.kill()
    shutil.rmtree(home / "data" / "state")
    kit = str(kits["alice"])
    for args in (["send", kit, "again", "--relay", "127.0.0.1:1"], ["history", kit]):
        done = ghostline(*args, home=home)
        assert done.returncode == 1
        # The hint says what recovering costs before anyone runs it.
        one_line_error(done.stderr, "state database", "ghostline pad recover", "it would skip 32")


def test_bad_command_line_input_is_a_usage_error(tmp_path: Path, home: Path) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    kit = str(kits["alice"])
    for args in (
        ["send", kit, "--relay", "127.0.0.1:1"],
        ["send", kit, "hi", "--relay", "nohost:99999"],
        ["send", kit, "hi", "--relay", "127.0.0.1:1", "--proxy", "http://x:1"],
        ["send", kit, "hi", "--relay", "127.0.0.1:1", "--tls-pin", "abc"],
    ):
        done = ghostline(*args, home=home)
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr
        assert done.stderr.splitlines()[0].startswith(("ghostline: error: ", "Error: "))
