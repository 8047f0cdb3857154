"""A very long message: `listen` shows its start and says how much more there is;
`history` and `--json` give the whole text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from e2e_support import ghostline

from ghostline.display import CONTINUATION, FOLD_LINES
from helpers import RelayProcess, make_kit_set

Cleanup = list[Callable[[], object]]


def test_listen_folds_a_message_of_a_thousand_lines_and_history_shows_it_all(
    tmp_path: Path, home: Path, cleanup: Cleanup
) -> None:
    alice, bob, carol = make_kit_set(tmp_path / "kits", ["alice", "bob", "carol"])
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    text = "\n".join(f"line {i}" for i in range(1000))
    done = ghostline("send", str(bob), "-", "-q", *relay.relay_args(), home=home, input=text)
    assert done.returncode == 0, done.stderr

    done = ghostline(
        "listen", str(alice), "--count", "1", "--timeout", "30", "-q", *relay.relay_args(),
        home=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = done.stdout.splitlines()
    assert shown[0].endswith("] bob: line 0")
    assert shown[1:FOLD_LINES] == [f"{CONTINUATION}line {i}" for i in range(1, FOLD_LINES)]
    assert shown[FOLD_LINES:] == [
        f"{CONTINUATION}… ({1000 - FOLD_LINES} more lines not shown: `ghostline history` or "
        "`listen --json` shows the whole message)"
    ]

    done = ghostline("history", str(alice), home=home)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1000
    done = ghostline(
        "listen", str(carol), "--json", "--count", "1", "--timeout", "30", "-q",
        *relay.relay_args(), home=home,
    )  # fmt: skip
    assert json.loads(done.stdout)["text"] == text
