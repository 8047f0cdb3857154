"""Format-2 kits at the command line: `pad new` makes them (`--length-step N`), and a
damaged header is refused in one line naming the kit as damaged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ghostline.cli import main
from ghostline.pad.kit import Kit

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def ghostline(capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out, err

    return run


def new(ghostline: Run, out: Path, *extra: str) -> tuple[int, str, str]:
    return ghostline(
        "pad", "new", "--members", "alice,bob,carol", "--size", "12KiB", "--out", str(out),
        *extra,
    )  # fmt: skip


def test_pad_new_makes_format_2_kits_unless_told_format_1(ghostline: Run, tmp_path: Path) -> None:
    code, stdout, stderr = new(ghostline, tmp_path / "kits")
    assert (code, stderr) == (0, "")
    with Kit.open(tmp_path / "kits" / "alice.ghostkit") as kit:
        assert (kit.format, kit.header.length_step) == (2, 32)
    assert "every message is padded to a multiple of 32 bytes" in stdout
    code, stdout, stderr = new(ghostline, tmp_path / "old", "--format", "1")
    assert (code, stderr) == (0, "")
    with Kit.open(tmp_path / "old" / "alice.ghostkit") as kit:
        assert (kit.format, kit.header.length_step) == (1, None)
    assert "padded" not in stdout


@pytest.mark.parametrize(("extra", "step"), [((), 32), (("--length-step", "1"), 1)])
def test_pad_new_format_2_writes_the_length_step(
    ghostline: Run, tmp_path: Path, extra: tuple[str, ...], step: int
) -> None:
    code, stdout, stderr = new(ghostline, tmp_path / "kits", "--format", "2", *extra)
    assert (code, stderr) == (0, "")
    for i, name in enumerate(["alice", "bob", "carol"]):
        with Kit.open(tmp_path / "kits" / f"{name}.ghostkit") as kit:
            assert (kit.format, kit.self_index, kit.header.length_step) == (2, i, step)
            # masks enough for two slices of 64-byte messages (kitset.default_auth_keys)
            assert kit.header.slice_len == 4096 and kit.header.auth_keys == 128
            assert kit.journal() == []
    assert f"every message is padded to a multiple of {step} bytes" in stdout


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (("--format", "1", "--length-step", "32"), "--length-step is for format-2 kits"),
        (("--format", "2", "--length-step", "0"), "--length-step must be 1 to 4096, not 0"),
        (("--format", "2", "--length-step", "5000"), "--length-step must be 1 to 4096"),
    ],
)
def test_a_length_step_that_cannot_be_used_is_a_usage_error_and_writes_nothing(
    ghostline: Run, tmp_path: Path, extra: tuple[str, ...], complaint: str
) -> None:
    code, stdout, stderr = new(ghostline, tmp_path / "kits", *extra)
    assert code == 2 and stdout == ""
    assert stderr.startswith(f"ghostline: error: {complaint}")
    assert not (tmp_path / "kits").exists()


def test_an_unknown_format_is_refused(ghostline: Run, tmp_path: Path) -> None:
    code, _, stderr = new(ghostline, tmp_path / "kits", "--format", "3")
    assert code == 2 and "'3' is not one of '1', '2'" in stderr
    assert not (tmp_path / "kits").exists()


@pytest.fixture
def v2_kit(ghostline: Run, tmp_path: Path) -> Path:
    assert new(ghostline, tmp_path / "kits", "--format", "2")[0] == 0
    return tmp_path / "kits" / "alice.ghostkit"


def test_a_damaged_format_2_header_is_one_line_naming_the_kit_as_damaged(
    ghostline: Run, v2_kit: Path
) -> None:
    raw = bytearray(v2_kit.read_bytes())
    raw[raw.index(b'"group":"') + 3] ^= 0x01  # one bit of a key name
    v2_kit.write_bytes(raw)
    code, stdout, stderr = ghostline("pad", "info", str(v2_kit))
    assert code == 1 and stdout == ""
    assert stderr.splitlines() == [
        f"ghostline: error: {v2_kit}: this kit is damaged: its header checksum does not "
        "match, so no field of it (pad id, roster, sizes) can be trusted",
        "ghostline: hint: Use an undamaged copy of your kit; without one, the group needs a "
        "new kit set.",
    ]
