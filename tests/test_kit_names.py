"""A member's name names its kit file: a name that cannot be one is refused, in one line,
before anything is written (by `pad new` and by `create_kit_set` itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ghostline.errors import KitError
from ghostline.pad.kitset import create_kit_set

BAD = [
    "a/b",
    "a\\b",
    "",
    ".",
    "..",
    ".hidden",
    "a\x00b",
    "a\nb",
    "\x1b[2J",
    "evil\u202etxt",
    "x" * 65,
    "😀" * 64,  # 64 characters, but 256 bytes: no file system takes that as a name
]


@pytest.mark.parametrize("name", BAD)
def test_create_kit_set_refuses_a_name_that_cannot_be_a_file_name(
    tmp_path: Path, name: str
) -> None:
    out = tmp_path / "kits"
    with pytest.raises(KitError, match="member name"):
        create_kit_set(
            out, ["alice", name], slice_len=1024, auth_keys=4, group="g",
            random_bytes=os.urandom, entropy="test",
        )  # fmt: skip
    assert not out.exists() or not list(out.iterdir())


def test_long_names_of_any_script_that_fit_are_taken(tmp_path: Path) -> None:
    names = ["é" * 64, "日本" * 32]
    paths = create_kit_set(
        tmp_path, names, slice_len=1024, auth_keys=4, group="g", random_bytes=os.urandom,
        entropy="test",
    )  # fmt: skip
    assert [p.name for p in paths] == [f"{n}.ghostkit" for n in names]


@pytest.mark.parametrize("members", ["a/b,c", "😀" * 64 + ",bob", "alice,.."])
def test_pad_new_refuses_such_a_name_in_one_line_and_writes_nothing(
    tmp_path: Path, members: str
) -> None:
    out = tmp_path / "kits"
    done = subprocess.run(
        [sys.executable, "-m", "ghostline", "pad", "new", "--members", members, "--size",
         "10KiB", "--out", str(out)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "GHOSTLINE_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "cannot be a file name" in done.stderr
    assert not out.exists()
