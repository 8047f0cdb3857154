"""`ghostline history KIT --keep ... / --clear` as a person runs it: a real process on
the member's real state database (messages exchanged in-process beforehand)."""

from __future__ import annotations

import time
from pathlib import Path

from e2e_support import ghostline

from ghostline.protocol.payload import encode_text
from ghostline.state.member import Member
from helpers import make_kit_set

SECRET = "the files are under the floor"


def with_history(tmp_path: Path, count: int) -> Path:
    """alice's kit, with `count` messages from bob in her history."""
    alice, bob = make_kit_set(tmp_path / "kits", ["alice", "bob"])
    with Member.open(alice) as a, Member.open(bob) as b:
        for seq in range(1, count + 1):
            a.receive(seq, b.seal(encode_text(f"{SECRET} {seq}", int(time.time()))).sealed)
    return alice


def kept(kit: Path) -> tuple[int | None, int]:
    with Member.open(kit) as member:
        return member.history_keep, len(member.history())


def test_keep_sets_how_long_history_is_kept_and_says_so(
    tmp_path: Path, ghostline_home: Path
) -> None:
    kit = with_history(tmp_path, 2)
    done = ghostline("history", str(kit), "--keep", "30d", home=ghostline_home)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "ghostline: history is kept for 30 days, then deleted\n"
    assert done.stdout == ""
    assert kept(kit) == (30, 2)
    done = ghostline("history", str(kit), "--keep", "forever", home=ghostline_home)
    assert done.returncode == 0 and kept(kit) == (None, 2)


def test_turning_history_off_asks_before_deleting_what_is_there(
    tmp_path: Path, ghostline_home: Path
) -> None:
    kit = with_history(tmp_path, 3)
    done = ghostline("history", str(kit), "--keep", "off", home=ghostline_home, input="n\n")
    assert done.returncode == 130
    assert "That deletes 3 entries now. Continue?" in done.stderr
    assert kept(kit) == (None, 3)  # nothing changed
    done = ghostline("history", str(kit), "--keep", "off", home=ghostline_home, input="y\n")
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("history is off: nothing is kept (parts of a received file "
                                "only until it is saved); deleted 3 older entries\n")  # fmt: skip
    assert kept(kit) == (0, 0)


def test_clear_asks_unless_yes_and_leaves_no_text_behind(
    tmp_path: Path, ghostline_home: Path
) -> None:
    kit = with_history(tmp_path, 4)
    done = ghostline("history", str(kit), "--clear", home=ghostline_home, input="")
    assert done.returncode == 130 and kept(kit) == (None, 4)
    done = ghostline("history", str(kit), "--clear", "--yes", home=ghostline_home)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "ghostline: deleted 4 entries from the history\n"
    assert kept(kit) == (None, 0)
    with Member.open(kit) as member:
        files = [member.state_path, Path(f"{member.state_path}-wal")]
    assert not any(SECRET.encode() in p.read_bytes() for p in files if p.exists())
    assert ghostline("history", str(kit), home=ghostline_home).stdout == ""


def test_a_bad_keep_or_a_mixed_command_line_is_a_usage_error_that_changes_nothing(
    tmp_path: Path, ghostline_home: Path
) -> None:
    kit = with_history(tmp_path, 1)
    for args in (
        ["--keep", "0d"],
        ["--keep", "weekly"],
        ["--keep", "99999d"],
        ["--clear", "--json"],
        ["--keep", "off", "--limit", "1"],
        ["--yes"],
    ):
        done = ghostline("history", str(kit), *args, "--yes", home=ghostline_home)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("ghostline: error: "), done.stderr
        assert kept(kit) == (None, 1), args
