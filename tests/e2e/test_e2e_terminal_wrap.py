"""No row of a terminal shows a message line that is not one, however long a line is:
real `ghostline listen`, `history` and `send` processes write to a pseudo-terminal 80
and 40 columns wide, and a terminal emulator (pyte) draws what a person would see.

A terminal wraps a line longer than its width into a row of its own. Left to it, a
message padded with spaces (or with wide characters) would draw a row that starts
`[12:00:00] alice: ...`, and so would a relay's long ERROR reason on stderr. GhostLine
wraps each line itself and marks every further row with `display.CONTINUATION`.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import RefusingRelay, ghostline
from terminal_screen import run_on_terminal, screen_rows

from ghostline.display import CONTINUATION
from ghostline.protocol.frames import ErrorCode, encode_error
from helpers import RelayProcess, make_kit_set

Cleanup = list[Callable[[], object]]

NOW = time.strftime("%H:%M:%S")
SPOOF = f"[{NOW}] alice: I agree, send bob the money"
# Row starts that read as a message or a status line of its own.
MESSAGE_ROW = re.compile(r"^\[\d\d(:\d\d:\d\d| \d\d:\d\d:\d\d|\d\d-\d\d-\d\d \d\d:\d\d:\d\d)\] ")
# listen's head "[HH:MM:SS] bob: " is 16 cells, history's "[YYYY-MM-DD HH:MM:SS] bob: " 27:
# each text below puts SPOOF at the start of a terminal row, 80 or 40 columns wide, if the
# terminal is left to wrap: 16 + 15 + 49 = 80 = 2 * 40 and 27 + 15 + 38 = 80.
ATTACKS = [
    "ok see you then" + " " * 49 + SPOOF,  # listen
    "ok see you then" + " " * 38 + SPOOF,  # history
    "日" * 32 + SPOOF,  # wide characters: 16 + 64 cells
    "🙂" * 32 + SPOOF,  # emoji: two cells each
    "e\u0301" * 64 + SPOOF,  # combining accents take no cell: 16 + 64
]


def test_no_terminal_row_of_listen_or_history_passes_for_another_members_message(
    tmp_path: Path, home: Path, cleanup: Cleanup
) -> None:
    alice, bob, carol, dave = make_kit_set(tmp_path / "kits", ["alice", "bob", "carol", "dave"])
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    for text in ATTACKS:
        done = ghostline("send", str(bob), "-", "-q", *relay.relay_args(), home=home, input=text)
        assert done.returncode == 0, done.stderr

    for columns, reader in ((80, carol), (40, dave)):  # each reads the messages once
        for command in (
            ["listen", str(reader), "--count", str(len(ATTACKS)), "--timeout", "30", "-q",
             *relay.relay_args()],
            ["history", str(reader)],
        ):  # fmt: skip
            code, output = run_on_terminal(*command, columns=columns, home=home)
            assert code == 0, output
            rows = screen_rows(output, columns)
            starts = [row for row in rows if MESSAGE_ROW.match(row)]
            assert len(starts) == len(ATTACKS), (command[0], columns, rows)
            assert all("] bob:" in row for row in starts), (command[0], columns, rows)
            assert not any(row.startswith("[") and "alice:" in row[:30] for row in rows)
            # Every other row belongs to the message above it, and says so.
            assert all(row in starts or row.startswith(CONTINUATION.rstrip()) for row in rows), (
                command[0],
                columns,
                rows,
            )
            # Nothing was lost: the rows put back together hold every text.
            joined = _join(rows)
            assert all(_bare(text) in joined for text in ATTACKS), (command[0], columns, rows)


def test_a_piped_listen_is_not_wrapped(tmp_path: Path, home: Path, cleanup: Cleanup) -> None:
    alice, bob = make_kit_set(tmp_path / "kits", ["alice", "bob"])
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    done = ghostline("send", str(bob), "-", "-q", *relay.relay_args(), home=home, input=ATTACKS[0])
    assert done.returncode == 0, done.stderr
    done = ghostline(
        "listen", str(alice), "--count", "1", "--timeout", "30", "-q", *relay.relay_args(),
        home=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"[{done.stdout[1:9]}] bob: {ATTACKS[0]}"]


@pytest.mark.parametrize("columns", [80, 40])
def test_a_relays_long_error_reason_cannot_draw_a_row_of_its_own(
    tmp_path: Path, home: Path, columns: int
) -> None:
    (kit,) = make_kit_set(tmp_path / "kits", ["alice", "bob"])[:1]
    # "ghostline: error: the relay refused: " is 37 cells: the spoof starts a row at 80
    # (37 + 10 + 33) and at 40 (37 + 10 + 33 = 2 * 40) if the terminal wraps the line.
    reason = "relay busy" + " " * 33 + f"[{NOW}] alice: I checked, the relay is fine"
    with RefusingRelay(encode_error(ErrorCode.ROSTER_MISMATCH, reason)) as relay:
        code, output = run_on_terminal(
            "send", str(kit), "hi", "--relay", f"127.0.0.1:{relay.port}", "--timeout", "20",
            columns=columns, home=home,
        )  # fmt: skip
    assert code != 0
    rows = screen_rows(output, columns)
    assert any(row.startswith("ghostline: error: the relay refused:") for row in rows), rows
    assert not any(MESSAGE_ROW.match(row) for row in rows), rows
    assert all(row.startswith(("ghostline: ", CONTINUATION.rstrip())) for row in rows), rows
    assert _bare(reason) in _join(rows)


def test_a_huge_error_reason_is_cut_in_the_error_line(tmp_path: Path, home: Path) -> None:
    (kit,) = make_kit_set(tmp_path / "kits", ["alice", "bob"])[:1]
    reason = "x" * 100_000
    with RefusingRelay(encode_error(ErrorCode.ROSTER_MISMATCH, reason)) as relay:
        done = ghostline(
            "send", str(kit), "hi", "--relay", f"127.0.0.1:{relay.port}", "--timeout", "20",
            home=home,
        )  # fmt: skip
    assert done.returncode != 0
    [error] = [line for line in done.stderr.splitlines() if line.startswith("ghostline: error:")]
    assert error.startswith("ghostline: error: the relay refused: xxx")
    assert len(error) < 1100 and "more characters)" in error, error[:200]


def _join(rows: list[str]) -> str:
    """The text of the screen's rows without spaces, continuation marks taken out (a
    row's trailing spaces cannot be told from the screen's)."""
    mark = CONTINUATION.rstrip()
    return _bare("".join(row[len(mark) :] if row.startswith(mark) else "\n" + row for row in rows))


def _bare(text: str) -> str:
    """`text` without spaces, composed as pyte stores it (NFC)."""
    return unicodedata.normalize("NFC", "".join(text.split(" ")))
