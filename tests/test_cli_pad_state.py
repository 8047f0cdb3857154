"""`ghostline pad info` and `ghostline pad recover` through the real command group."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from ghostline.cli import cli, main, report
from ghostline.cli.pad_state import _print_info
from ghostline.errors import OldStateLayout, StateError
from ghostline.files import split_file
from ghostline.pad.kit import Kit
from ghostline.protocol.payload import encode_text
from ghostline.state.erasure import erased_extent
from ghostline.state.limits import MAX_SEAL_GROUP
from ghostline.state.member import Member
from ghostline.state.recovery import recovery_margin
from helpers import make_kit_set


def used_kits(tmp_path: Path) -> list[Path]:
    """m0 sent 100 and 300 bytes, m1 read both; m2 read nothing. The pad is fixed (a
    seed) and m0's byte 400 is not zero, so the kit shows exactly 400 bytes erased."""
    kits = make_kit_set(tmp_path / "kits", 3, slice_len=10_000, auth_keys=100, seed="used")
    a, b, c = (Member.open(k) for k in kits)
    for seq, e in enumerate(a.seal_many([b"x" * 100, b"y" * 300]), start=1):
        b.receive(seq, e.sealed)
    for m in (a, b, c):
        m.close()
    return kits


def invoke(*args: str, input: str | None = None) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(cli, ["pad", *args], input=input)
    return result.exit_code, result.output, result.exception


def test_pad_info_prints_a_table_of_every_member(tmp_path: Path) -> None:
    kits = used_kits(tmp_path)
    code, out, exc = invoke("info", str(kits[0]))
    assert code == 0, exc
    assert "test group" in out and "You are m0" in out
    assert "m0 (you)" in out and "m1" in out and "m2" in out
    row = next(line for line in out.splitlines() if "m0 (you)" in line)
    cells = [c.strip() for c in row.split("  ") if c.strip()]
    # pad left, keys left, sent, text size (none sent: 64 B assumed), messages left
    assert cells == ["m0 (you)", "9.38 KiB", "98", "2", "64 B", "98"]
    assert "Erased: 4 of 400 keys, 400 B of 29.3 KiB of pad" in out


def test_pad_info_json_matches_member_usage(tmp_path: Path) -> None:
    kits = used_kits(tmp_path)
    code, out, exc = invoke("info", str(kits[1]), "--json")
    assert code == 0, exc
    report = json.loads(out)
    with Member.open(kits[1]) as b:
        usage = b.usage()
        pad_id = b.header.pad_id.hex()
    assert report["schema"] == 3
    assert (report["format"], report["length_step"]) == (1, None)
    assert (report["pad_id"], report["n"], report["self"]) == (
        pad_id,
        3,
        {"index": 1, "name": "m1"},
    )
    assert report["state"]["status"] == "ok"
    for row, m in zip(report["members"], usage.members, strict=True):
        assert row == {
            "index": m.index,
            "name": m.name,
            "self": m.is_self,
            "pad_total": m.slice_len,
            "extents": None,
            "bytes_used": m.bytes_used,
            "bytes_left": m.bytes_left,
            "keys_used": m.keys_used,
            "keys_left": m.keys_left,
            "messages": m.messages,
            "average_size": m.average_size,
            "text_size": m.text_size,
            "messages_left": m.messages_left,
            "failed_verifications": 0,
        }
    assert report["members"][0]["bytes_used"] == 400
    assert report["members"][0]["messages_left"] == 98
    assert report["erased"] == {
        "keys": 2,
        "keys_total": 400,
        "pad_bytes": 400,
        "pad_bytes_total": 30_000,
        "fraction": round(usage.erased_fraction, 6),
    }


def test_messages_left_assumes_recent_text_sizes_not_file_chunks(tmp_path: Path) -> None:
    kits = make_kit_set(tmp_path / "kits", 2, slice_len=300_000, auth_keys=20_000)
    with Member.open(kits[0]) as a:
        header, chunks = split_file(
            os.urandom(150_000), transfer_id=b"T" * 8, sent_at=1, name="f.bin"
        )
        a.seal_many([header.encode(), *(c.encode() for c in chunks)])  # three 64 KiB chunks
        texts = [encode_text(t, 1) for t in ("see you at eight", "ok", "bring the keys")]
        a.seal_many(texts)
        me = a.usage().me
    text_size = sum(map(len, texts)) / len(texts)
    assert me.text_size == text_size
    assert me.messages_left == me.bytes_left // text_size  # thousands, not one or two
    assert me.messages_left > 100 * me.bytes_left // me.average_size
    code, out, exc = invoke("info", str(kits[0]), "--json")
    assert json.loads(out)["members"][0]["messages_left"] == me.messages_left


@pytest.mark.parametrize("fmt", [1, 2])
def test_pad_info_fits_80_columns_without_cutting_a_number(fmt: int) -> None:
    big = 17_179_869_184
    member = {
        "index": 0, "self": True, "bytes_used": 0, "bytes_left": (1 << 40) - 1,
        "keys_used": 0, "keys_left": big, "messages": big, "average_size": 64.0,
        "text_size": 1000.0, "messages_left": big, "pad_total": (1 << 40) - 3,
        "failed_verifications": big,
    }  # fmt: skip
    report = {
        "format": fmt, "length_step": 32 if fmt == 2 else None,
        "kit": "k", "group": "g" * 70, "pad_id": "ab" * 16, "n": 2, "slice_len": 1 << 40,
        "auth_keys": big, "self": {"index": 0, "name": "n" * 64},
        "members": [member | {"name": "n" * 64}, member | {"index": 1, "self": False,
                                                          "name": "bob"}],
        "erased": {"keys": big, "keys_total": 4 * big, "pad_bytes": 1 << 40,
                   "pad_bytes_total": 1 << 41, "fraction": 0.25},
        "state": {"path": "p", "status": "ok", "detail": None},
    }  # fmt: skip
    screen = io.StringIO()
    _print_info(report, None, Console(file=screen, width=80, highlight=False))
    lines = screen.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if "1000 B" in line]  # text size: one row each
    assert len(rows) == 2
    for row in rows:  # pad left, keys left, sent/read, text size and messages left, whole
        assert row.count(f"{big:,}") == 3 and "1024 GiB" in row
    # Format 2: what each holds now under what is left; failed checks in a sentence.
    held = [line for line in lines if "/ 1024 GiB" in line]
    assert len(held) == (2 if fmt == 2 else 0)
    assert ("Failed checks:" in screen.getvalue()) and f"bob {big:,}" in " ".join(lines)


def test_pad_info_changes_neither_the_kit_nor_the_state(tmp_path: Path) -> None:
    kits = used_kits(tmp_path)
    with Member.open(kits[0]) as a:
        state = a.state_path
    kit_before, state_before = kits[0].read_bytes(), state.read_bytes()
    assert invoke("info", str(kits[0]), "--json")[0] == 0
    assert kits[0].read_bytes() == kit_before
    assert state.read_bytes() == state_before
    assert not Path(f"{state}-wal").exists() and not Path(f"{state}-shm").exists()


def test_pad_info_reports_a_missing_state_and_names_the_recovery(tmp_path: Path) -> None:
    kits = used_kits(tmp_path)
    with Member.open(kits[0]) as a:
        a.state_path.unlink()
    code, out, _ = invoke("info", str(kits[0]))
    assert code == 0
    assert "State missing" in out and "ghostline pad recover" in out
    # What recovering would cost is said before anyone runs it: m0 sent 2 messages
    # (400 bytes) of 100 keys and 10,000 bytes; the margin takes every key it can and
    # the rest of the slice.
    said = " ".join(out.split())
    assert f"it would skip {MAX_SEAL_GROUP} of your 98 unused keys" in said
    assert "9.38 KiB of the 9.38 KiB left in your slice (100.00%)" in said
    assert "can no longer send" in said
    report = json.loads(invoke("info", str(kits[0]), "--json")[1])
    assert report["state"]["status"] == "missing"
    assert report["members"][0]["keys_used"] == 2  # from the kit's erased keys


def test_a_state_database_of_an_older_layout_is_refused_with_recovery_and_its_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kits = used_kits(tmp_path)
    with Member.open(kits[0]) as a:
        state = a.state_path
    with sqlite3.connect(state) as db:  # as an older GhostLine wrote it
        db.execute("UPDATE schema_version SET version = 4")
    db.close()
    with pytest.raises(OldStateLayout) as err:
        Member.open(kits[0])
    assert err.value.kit_path == str(kits[0]) and err.value.version == 4
    report(err.value)
    said = " ".join(capsys.readouterr().err.split())
    assert "has layout 4, written by an older GhostLine" in said
    assert f"ghostline: hint: Run `ghostline pad recover {kits[0]}`" in said
    assert f"it would skip {MAX_SEAL_GROUP} of your 98 unused keys" in said
    info = json.loads(invoke("info", str(kits[0]), "--json")[1])
    assert info["state"]["status"] == "stale" and "layout 4" in info["state"]["detail"]
    code, out, exc = invoke("recover", str(kits[0]), "--yes")
    assert code == 0, exc
    with Member.open(kits[0]) as a:  # a database of the current layout, past the margin
        assert a.store.next_position() == (2 + MAX_SEAL_GROUP, 10_000)


def test_a_declined_recovery_is_a_one_line_error_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kits = used_kits(tmp_path)
    with Member.open(kits[0]) as a:
        a.state_path.unlink()
    with pytest.raises(StateError):
        Member.open(kits[0])
    kit_before = kits[0].read_bytes()
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    with pytest.raises(SystemExit) as exit_:
        main(["pad", "recover", str(kits[0])])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "ghostline: error: recovery cancelled; nothing was changed"
    assert kits[0].read_bytes() == kit_before


def test_pad_recover_asks_then_rebuilds_a_state_that_can_send(tmp_path: Path) -> None:
    kits = used_kits(tmp_path)
    with Member.open(kits[0]) as a:
        state = a.state_path
    state.unlink()
    code, out, exc = invoke("recover", str(kits[0]), input="n\n")
    assert code != 0 and isinstance(exc, StateError)
    assert not state.exists()

    code, out, exc = invoke("recover", str(kits[0]), input="y\n")
    assert code == 0, exc
    assert f"skipping {MAX_SEAL_GROUP} key(s)" in out
    assert f"skipping {10_000 - 400} byte(s)" in out  # margin capped at the slice end
    assert "history" in out and "lost" in out
    assert f"next message {2 + MAX_SEAL_GROUP}, next offset 10000" in out
    with Member.open(kits[0]) as a:
        assert a.store.next_position() == (2 + MAX_SEAL_GROUP, 10_000)
        assert a.usage().me.messages_left == 0


def test_pad_recover_with_room_left_seals_beyond_the_margin(tmp_path: Path) -> None:
    keys, margin = recovery_margin(2)
    kits = make_kit_set(tmp_path / "kits", 2, slice_len=margin + 4096, auth_keys=2 * keys)
    with Member.open(kits[0]) as a:
        a.seal(b"z" * 500)
        a.state_path.unlink()
    with Kit.open(kits[0], writable=False) as kit:
        # 500, or a byte or two more when the pad after it happens to start with zeros
        # (the kit cannot tell those from erased ones; chance 1 in 256 per byte).
        erased = erased_extent(kit, 0)
    assert 500 <= erased < 500 + 2 * 32
    code, out, exc = invoke("recover", str(kits[0]), "--yes")
    assert code == 0, exc
    with Member.open(kits[0]) as a:
        e = a.seal(b"fresh")
        assert (e.counter, e.offset) == (1 + keys, erased + margin)


def test_pad_recover_leaves_a_consistent_state_alone(tmp_path: Path) -> None:
    kits = used_kits(tmp_path)
    code, out, _ = invoke("recover", str(kits[0]), "--yes")
    assert code == 0 and "nothing to recover" in out


def test_pad_recover_help_explains_the_procedure(tmp_path: Path) -> None:
    code, out, _ = invoke("recover", "--help")
    assert code == 0
    assert f"highest erased outbound key + 1 + {MAX_SEAL_GROUP}" in out
    assert "+ 2.06 MiB (the most pad one commit uses" in " ".join(out.split())
