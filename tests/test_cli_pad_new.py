"""`ghostline pad new`: what a user types and sees, run through the real entry point."""

from __future__ import annotations

import os
import random
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from ghostline.cli import main
from ghostline.cli.pad import _Progress, pad, parse_members
from ghostline.errors import UsageError
from ghostline.pad.kit import Kit
from ghostline.pad.kitset import default_auth_keys
from ghostline.protocol.payload import encode_text
from ghostline.state.member import Member
from ghostline.units import format_size, parse_size
from waiting import wait_until

Run = Callable[..., tuple[int, str, str]]
GHOSTLINE = Path(sys.executable).parent / "ghostline"


@pytest.fixture
def ghostline(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run `ghostline ARGS...` in-process via cli.main; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out, err

    return run


def kit_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_pad_new_writes_one_private_kit_per_member(ghostline: Run, tmp_path: Path) -> None:
    out = tmp_path / "kits"
    code, stdout, stderr = ghostline(
        "pad", "new", "--members", "alice,bob,carol", "--size", "12KiB", "--out", str(out),
        "--group", "friends",
    )  # fmt: skip
    assert (code, stderr) == (0, "")
    assert kit_names(out) == ["alice.ghostkit", "bob.ghostkit", "carol.ghostkit"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for i, name in enumerate(["alice", "bob", "carol"]):
        path = out / f"{name}.ghostkit"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with Kit.open(path, writable=False) as kit:
            assert kit.self_index == i
            assert kit.header.group == "friends"
            assert kit.header.slice_len == 4096
            assert kit.format == 2  # the default
            assert kit.header.auth_keys == 128  # 2 * 4096 / 64: two slices' worth
            assert kit.header.entropy == "os.urandom"
        assert re.search(rf"^ +{name} +gets +{re.escape(str(path))}$", stdout, re.MULTILINE)
    assert "Group pad: 12 KiB (4 KiB for each member" in stdout
    assert "128 one-time masks per pair" in stdout
    assert "Hand each member their own file only" in stdout


def test_the_default_key_count_covers_64_byte_messages(ghostline: Run, tmp_path: Path) -> None:
    # 4 KiB over 3 members: slice 1365 bytes; format 1: ceil(1365 / 64) = 22 keys, the
    # slice's worth; format 2: ceil(2 * 1365 / 64) = 43 masks, two slices' worth.
    for fmt, keys in (("1", 22), ("2", 43)):
        code, _, _ = ghostline(
            "pad", "new", "--members", "a,b,c", "--size", "4KiB", "--format", fmt,
            "--out", str(tmp_path / fmt),
        )  # fmt: skip
        assert code == 0
        with Kit.open(tmp_path / fmt / "a.ghostkit", writable=False) as kit:
            assert (kit.header.slice_len, kit.header.auth_keys) == (1365, keys)
    assert default_auth_keys(64) == 1 and default_auth_keys(65) == 2
    # Format 2, ten members: half the group pad (five slices) is the larger share.
    assert default_auth_keys(64, 10, 2) == 5 and default_auth_keys(64, 3, 2) == 2


def test_auth_keys_and_group_can_be_chosen(ghostline: Run, tmp_path: Path) -> None:
    code, _, _ = ghostline(
        "pad", "new", "--members", "a,b", "--size", "1000", "--out", str(tmp_path / "k"),
        "--auth-keys", "3",
    )  # fmt: skip
    assert code == 0
    with Kit.open(tmp_path / "k" / "b.ghostkit", writable=False) as kit:
        assert (kit.header.slice_len, kit.header.auth_keys, kit.header.group) == (500, 3, "")


def test_existing_kit_file_is_never_overwritten(ghostline: Run, tmp_path: Path) -> None:
    out = tmp_path / "kits"
    out.mkdir()
    (out / "bob.ghostkit").write_bytes(b"precious")
    code, stdout, stderr = ghostline(
        "pad", "new", "--members", "alice,bob", "--size", "1KiB", "--out", str(out)
    )
    assert code == 1
    assert stdout == ""
    assert stderr.startswith(f"ghostline: error: {out / 'bob.ghostkit'} already exists")
    assert kit_names(out) == ["bob.ghostkit"]
    assert (out / "bob.ghostkit").read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("17B", 17),
        ("4KiB", 4096),
        ("4 kib", 4096),
        ("1.5KiB", 1536),
        ("4MiB", 4 << 20),
        ("2GiB", 2 << 30),
    ],
)
def test_sizes_accept_bytes_and_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("4MB", "use binary units"),
        ("lots", "is not a size"),
        ("-1", "is not a size"),
        ("", "is not a size"),
        ("1.3B", "not a whole number of bytes"),
        ("4 PiB", "unknown unit"),
    ],
)
def test_a_bad_size_is_a_one_line_usage_error(
    ghostline: Run, tmp_path: Path, text: str, complaint: str
) -> None:
    out = tmp_path / "kits"
    code, stdout, stderr = ghostline(
        "pad", "new", "--members", "a,b", "--size", text, "--out", str(out)
    )
    assert code == 2
    assert stdout == ""
    assert stderr.count("\n") == 1
    assert stderr.startswith("ghostline: error: --size")
    assert complaint in stderr
    assert not out.exists()


def test_a_bad_size_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(GHOSTLINE), "pad", "new", "--members", "a,b", "--size", "4MB", "--out", "k"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "ghostline: error: --size '4MB': use binary units (KiB, MiB, GiB), not MB\n"
    )
    assert result.stdout == ""


def test_a_size_too_small_for_the_group_is_refused(ghostline: Run, tmp_path: Path) -> None:
    code, _, stderr = ghostline(
        "pad", "new", "--members", "a,b,c", "--size", "2", "--out", str(tmp_path / "k")
    )
    assert code == 2
    assert "too small for 3 members" in stderr


def test_a_size_too_small_for_one_short_message_each_is_refused_with_the_minimum(
    ghostline: Run, tmp_path: Path
) -> None:
    out = tmp_path / "k"
    code, _, stderr = ghostline(
        "pad", "new", "--members", "a,b", "--size", "10B", "--format", "1", "--out", str(out)
    )
    assert code == 2
    assert "at least 12 B in all" in stderr and "one short message" in stderr
    assert not out.exists()
    code, _, stderr = ghostline(
        "pad", "new", "--members", "a,b", "--size", "63B", "--out", str(out)
    )
    assert code == 2  # format 2 pads the shortest message to the length step, 32 bytes
    assert "each needs at least 32 B, so at least 64 B in all" in stderr
    code, _, stderr = ghostline(
        "pad", "new", "--members", "a,b", "--size", "12B", "--format", "1", "--out", str(out)
    )
    assert code == 0, stderr
    with Member.open(out / "a.ghostkit") as a:  # the smallest kit sends one short message
        a.seal(encode_text("x", 0))


@pytest.mark.parametrize(
    ("members", "complaint"),
    [
        ("alice", "2 to 255 members"),
        ("alice,alice", "names someone twice"),
        ("alice,,bob", "empty name"),
        ("alice,../bob", "cannot be a file name"),
        ("alice,.hidden", "cannot be a file name"),
    ],
)
def test_bad_member_lists_are_refused(members: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_members(members)


def test_member_names_are_trimmed() -> None:
    assert parse_members(" alice , bob ") == ["alice", "bob"]


def test_a_failing_entropy_source_leaves_no_kit_and_no_folder(
    ghostline: Run, tmp_path: Path
) -> None:
    stuck = tmp_path / "stuck.bin"
    stuck.write_bytes(bytes(1 << 16))
    out = tmp_path / "new" / "kits"
    code, stdout, stderr = ghostline(
        "pad", "new", "--members", "a,b", "--size", "8KiB", "--out", str(out),
        "--entropy", str(stuck),
    )  # fmt: skip
    assert code == 1
    assert stdout == ""
    assert "repetition count test at byte 5" in stderr
    assert f"file:{stuck}" in stderr
    assert not (tmp_path / "new").exists()


def test_an_entropy_file_too_short_is_refused_before_writing(
    ghostline: Run, tmp_path: Path
) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes(os.urandom(1000))
    out = tmp_path / "kits"
    code, _, stderr = ghostline(
        "pad", "new", "--members", "a,b", "--size", "1KiB", "--out", str(out),
        "--entropy", str(short), "--format", "1",
    )  # fmt: skip
    assert code == 1
    assert "holds 1000 bytes but the kit set needs 1536" in stderr  # 1024 + 2 * 16 * 32
    assert not out.exists()


def test_an_entropy_file_is_named_in_every_kit(
    ghostline: Run, tmp_path: Path, rng: random.Random
) -> None:
    samples = tmp_path / "samples.bin"
    samples.write_bytes(rng.randbytes(4096))  # passes the health tests at H=7.5
    out = tmp_path / "kits"
    code, stdout, _ = ghostline(
        "pad", "new", "--members", "a,b", "--size", "1KiB", "--out", str(out),
        "--entropy", str(samples), "--entropy-rate", "7.5",
    )  # fmt: skip
    assert code == 0
    expected = f"os.urandom xor file:{samples} (H=7.5, SP800-90B RCT+APT)"
    assert f"Randomness: {expected}." in stdout
    with Kit.open(out / "a.ghostkit", writable=False) as kit:
        assert kit.header.entropy == expected


def test_pad_is_a_group_offering_new(ghostline: Run) -> None:
    assert isinstance(pad, click.Group)
    code, stdout, _ = ghostline("pad", "--help")
    assert code == 0
    assert "new" in stdout


def test_the_progress_bar_never_writes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    progress = _Progress(100)
    progress._enabled = True  # as if stderr were a terminal
    progress.DELAY = 0
    with progress:
        progress(50)
        progress(50)
    assert capsys.readouterr().out == ""


def test_sizes_print_in_binary_units() -> None:
    assert [format_size(n) for n in (512, 4096, 1536, 4 << 20, 3 << 30)] == [
        "512 B",
        "4 KiB",
        "1.5 KiB",
        "4 MiB",
        "3 GiB",
    ]


def files_begun(out: Path) -> bool:
    """Whether the first partial kit file is there (the files are being opened)."""
    return out.exists() and any(out.iterdir())


def pad_being_written(out: Path) -> bool:
    """Whether a partial kit file holds more than a MiB on disk (they start sparse)."""
    return files_begun(out) and any(p.stat().st_blocks * 512 > 1 << 20 for p in out.iterdir())


@pytest.mark.parametrize("moment", [files_begun, pad_being_written], ids=lambda f: f.__name__)
def test_ctrl_c_during_generation_leaves_no_kit_behind(
    tmp_path: Path, moment: Callable[[Path], bool]
) -> None:
    out = tmp_path / "kits"
    proc = subprocess.Popen(
        [str(GHOSTLINE), "pad", "new", "--members", "a,b,c", "--size", "1GiB", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: moment(out) or proc.poll() is not None, 30, moment.__name__)
        assert proc.poll() is None, "pad new ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert stderr.strip() in ("ghostline: aborted", "ghostline: interrupted")
    assert stdout == ""
    assert not out.exists()
