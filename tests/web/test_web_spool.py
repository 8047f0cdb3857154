"""The upload spool of a `ghostline web` that was killed is removed by the next one to
start, never the spool of one still running: real processes, a real relay, SIGKILL."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from web_support import WebProcess

from ghostline.web.spool import PREFIX, Spool, remove_abandoned
from helpers import RelayProcess


def spool_of(tmp: Path, web: WebProcess) -> Path:
    [path] = tmp.glob(f"{PREFIX}{web.proc.pid}-*")
    return path


def upload(web: WebProcess, data: bytes) -> None:
    """A file offered through the page's own endpoint: it waits in the spool."""
    origin = f"127.0.0.1:{web.port}"
    answer = web.request(
        "POST", f"/upload?t={web.token}&name=secret.txt",
        {"Host": origin, "Origin": f"http://{origin}"}, data,
    )  # fmt: skip
    assert answer.status == 200


def test_a_killed_web_process_leaves_its_uploads_only_until_the_next_one_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    relay: RelayProcess,
    kits: dict[str, Path],
    start_web: Callable[..., WebProcess],
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the processes' temporary folder
    killed = start_web(kits["alice"], relay.relay_args(), "alice")
    running = start_web(kits["bob"], relay.relay_args(), "bob")
    upload(killed, b"the plaintext of a file not sent yet")
    upload(running, b"a file bob has not sent yet")
    left, kept = spool_of(tmp, killed), spool_of(tmp, running)
    assert stat.S_IMODE(left.stat().st_mode) == 0o700
    [waiting] = left.iterdir()
    assert waiting.read_bytes() == b"the plaintext of a file not sent yet"

    killed.kill()  # SIGKILL: nothing of it runs to clean up
    assert left.exists()
    started = start_web(kits["alice"], relay.relay_args(), "alice")

    assert not left.exists()  # removed by the process that started after
    assert [p.read_bytes() for p in kept.iterdir()] == [b"a file bob has not sent yet"]
    assert spool_of(tmp, started).is_dir()
    assert sorted(tmp.iterdir()) == sorted([kept, spool_of(tmp, started)])
    running.stop()
    started.stop()
    assert list(tmp.iterdir()) == []  # a process that stops removes its own


def test_only_this_users_unlocked_spool_folders_are_removed(tmp_path: Path) -> None:
    mine = Spool.create(tmp_path)
    try:
        older = tmp_path / "ghostline-web-abcd1234"  # an earlier version's: no lock to judge by
        older.mkdir()
        other = tmp_path / f"{PREFIX}99-link"
        other.symlink_to(older)  # not a folder: never followed
        dead = tmp_path / f"{PREFIX}1-dead"
        dead.mkdir()
        (dead / "upload-x").write_bytes(b"left behind")
        assert remove_abandoned(tmp_path) == [dead]
        assert mine.path.is_dir() and older.is_dir() and other.is_symlink()
        assert not dead.exists()
        assert os.listdir(older) == []
    finally:
        mine.close()
    assert not mine.path.exists()
