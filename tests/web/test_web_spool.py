"""The upload spool of a `ghostline web` that was killed is removed by the next one to
start, never the spool of one still running: real processes, a real relay, SIGKILL. An
earlier version's (no lock) is removed only when no other `ghostline web` that may keep
its uploads in that temporary folder runs."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from web_support import WebProcess

from ghostline.web.spool import PREFIX, Abandoned, Spool, remove_abandoned
from ghostline.web.spoolusers import runs_ghostline_web, temp_candidates
from helpers import RelayProcess
from waiting import wait_until


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
        older = tmp_path / "ghostline-web-abcd1234"  # an earlier version's: no lock
        older.mkdir()
        (older / "upload-y").write_bytes(b"left behind by an earlier version")
        other = tmp_path / f"{PREFIX}99-link"
        other.symlink_to(mine.path)  # not a folder: never followed
        dead = tmp_path / f"{PREFIX}1-dead"
        dead.mkdir()
        (dead / "upload-x").write_bytes(b"left behind")
        unlike = tmp_path / "ghostline-web-notours1x"  # not a name either version makes
        unlike.mkdir()
        # No `ghostline web` keeps its uploads in tmp_path: the earlier one goes too.
        assert sorted(remove_abandoned(tmp_path), key=lambda a: a.path) == [
            Abandoned(older, 1, earlier=True),
            Abandoned(dead, 1, earlier=False),
        ]
        assert mine.path.is_dir() and other.is_symlink() and unlike.is_dir()
        assert not dead.exists() and not older.exists()
        assert os.listdir(mine.path) == []
    finally:
        mine.close()
    assert not mine.path.exists()


def test_an_earlier_versions_folder_stays_while_a_web_process_may_use_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    relay: RelayProcess,
    kits: dict[str, Path],
    start_web: Callable[..., WebProcess],
) -> None:
    tmp, elsewhere = tmp_path / "tmp", tmp_path / "elsewhere"
    tmp.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    # Stands for a running `ghostline web` of an earlier version, which made this
    # folder as it started and holds no lock on it.
    running = start_web(kits["alice"], relay.relay_args(), "alice")
    older = tmp / "ghostline-web-abcd1234"
    older.mkdir(mode=0o700)
    (older / "upload-abc").write_bytes(b"a file alice has not sent yet")

    second = start_web(kits["bob"], relay.relay_args(), "bob")
    assert [p.read_bytes() for p in older.iterdir()] == [b"a file alice has not sent yet"]
    running.kill()  # SIGKILL, as a crash would
    assert second.stop() == 0
    assert not any(str(older) in line for line in running.stderr + second.stderr)

    monkeypatch.setenv("TMPDIR", str(elsewhere))
    other = start_web(kits["bob"], relay.relay_args(), "bob")  # keeps its uploads elsewhere
    monkeypatch.setenv("TMPDIR", str(tmp))
    third = start_web(kits["alice"], relay.relay_args(), "alice")
    assert not older.exists()
    said = (
        f"ghostline web: removed {older}, the upload folder of an earlier version of "
        "ghostline web that no longer runs (1 file left in it)"
    )
    wait_until(lambda: said in third.stderr, 30, "the line saying what was removed")
    other.stop()
    third.stop()


@pytest.mark.parametrize(
    ("argv", "web"),
    [
        ([b"/usr/bin/python3", b"/home/ann/.local/bin/ghostline", b"web", b"ann.ghostkit"], True),
        (
            [b"/usr/bin/python3", b"-m", b"ghostline", b"web", b"ann.ghostkit", b"--port", b"0"],
            True,
        ),
        ([b"ghostline", b"--version", b"web"], True),  # whatever comes between
        ([b"/usr/bin/python3", b"-m", b"ghostline", b"relay", b"--port", b"0"], False),
        ([b"/usr/bin/python3", b"-m", b"pytest", b"tests/web"], False),
        ([b"vim", b"ghostline-web-abcd1234"], False),
        ([b""], False),
    ],
)
def test_a_command_line_runs_ghostline_web_when_it_names_ghostline_then_web(
    argv: list[bytes], web: bool
) -> None:
    assert runs_ghostline_web(argv) is web


def test_the_temporary_folders_a_process_may_use_are_every_one_gettempdir_tries() -> None:
    environ = b"HOME=/home/ann\0TMPDIR=rel/tmp\0TMP=/t\0TEMP=\0TMPDIRX=/no\0"
    assert temp_candidates(environ, "/work") == [
        "/work/rel/tmp", "/t", "/tmp", "/var/tmp", "/usr/tmp", "/work",
    ]  # fmt: skip
