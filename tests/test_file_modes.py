"""Every file GhostLine makes for a member is 0600 and every folder 0700, whatever the
umask: state databases with their -wal and -shm files, kit records, the data, state and
downloads folders (and GHOSTLINE_HOME itself when it is made), received files, and
`pad new`'s kits and output folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ghostline import paths
from ghostline.cli import cli
from ghostline.files.publish import save_new_file
from ghostline.state.member import Member


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and of everything under it, by path relative to root's
    parent."""
    found = {root.name: stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root.parent))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.usefixtures("umask_022")
def test_every_file_and_folder_made_for_a_member_is_private_with_umask_022(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "made" / "home"  # neither exists yet
    monkeypatch.setenv("GHOSTLINE_HOME", str(home))
    out = tmp_path / "usb" / "kits"
    result = CliRunner().invoke(
        cli, ["pad", "new", "--members", "alice,bob", "--size", "64KiB", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with Member.open(out / "alice.ghostkit") as alice:
        alice.seal(b"\x01\x00\x00\x00\x01hello")
        state = alice.state_path
        assert Path(f"{state}-wal").exists() and Path(f"{state}-shm").exists()
        save_new_file(paths.downloads_dir() / "sub", "received.txt", b"a file")
        made = modes(tmp_path / "made")
    usb = modes(tmp_path / "usb")
    assert {name for name in made if name.endswith(("-wal", "-shm"))}, made
    for name, mode in [*made.items(), *usb.items()]:
        is_dir = (tmp_path / name).is_dir() if name not in ("made", "usb") else True
        assert mode == (0o700 if is_dir else 0o600), (name, oct(mode))
    assert len(usb) == 4  # usb, usb/kits and the two kits
