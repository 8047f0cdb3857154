"""What a member's terminal shows is what was sent: real `ghostline send`, `listen` and
`history` processes against a real relay (and a fake one for a hostile ERROR reason).

- a message cannot print a line that passes for another member's message: each further
  line of its text is marked as a continuation (the attack of issue 9, item 1);
- escape sequences, controls and bidi overrides in a message or a member's name are
  shown escaped, never written to the terminal;
- `--json` output is as it always was;
- an ERROR reason from a relay is quoted escaped in the error line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import RefusingRelay, ghostline

from ghostline.display import CONTINUATION
from ghostline.pad import kitset
from ghostline.protocol.frames import ErrorCode, encode_error
from helpers import RelayProcess, make_kit_set

Cleanup = list[Callable[[], object]]

ATTACK = "ok see you then\n[18:08:01] alice: I agree, send bob the money"
# What a terminal would act on: clear the screen, set the title, colour, reverse text.
HOSTILE = "\x1b[2J\x1b]0;TITLE\x07\x1b[31mred\u202eevil\x9b2J\rback"
LISTEN_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] ")
HISTORY_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ")
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def listen_text(kit: Path, relay: RelayProcess, home: Path, count: int) -> list[str]:
    done = ghostline(
        "listen", str(kit), "--count", str(count), "--timeout", "30", "-q",
        *relay.relay_args(), home=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def send(kit: Path, relay: RelayProcess, home: Path, text: str) -> None:
    done = ghostline("send", str(kit), "-", "-q", *relay.relay_args(), home=home, input=text)
    assert done.returncode == 0, done.stderr


def test_a_message_cannot_print_a_line_that_passes_for_another_members_message(
    tmp_path: Path, home: Path, cleanup: Cleanup
) -> None:
    alice, mallory, carol = make_kit_set(tmp_path / "kits", ["alice", "mallory", "carol"])
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    send(mallory, relay, home, ATTACK)

    shown = listen_text(carol, relay, home, 1)
    assert [line for line in shown if LISTEN_LINE.match(line)] == [shown[0]], (
        f"only mallory's first line may read as a message: {shown}"
    )
    assert shown[0].endswith("] mallory: ok see you then")
    assert shown[1:] == [CONTINUATION + "[18:08:01] alice: I agree, send bob the money"]

    done = ghostline("history", str(carol), home=home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len([line for line in lines if HISTORY_LINE.match(line)]) == 1
    assert lines[0].endswith("] mallory: ok see you then")
    assert lines[1] == CONTINUATION + "[18:08:01] alice: I agree, send bob the money"
    # Every line of text output is a message's first line or a marked continuation.
    assert all(line.startswith(("[", CONTINUATION)) for line in shown + lines)


def hostile_names_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kits made as another program could make them: `pad new` and create_kit_set refuse
    a name with controls, but a kit can hold one, and then it is shown escaped."""
    monkeypatch.setattr(kitset, "member_name_problem", lambda name: None)


def test_escape_sequences_in_messages_and_names_are_shown_escaped(
    tmp_path: Path, home: Path, cleanup: Cleanup, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "eve\x1b[1m\u202e"
    hostile_names_allowed(monkeypatch)
    alice, eve = make_kit_set(tmp_path / "kits", ["alice", name])
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    send(eve, relay, home, HOSTILE)
    send(eve, relay, home, "[bold]not bold[/] [link=https://evil.example]x[/link]")

    shown = listen_text(alice, relay, home, 2)
    done = ghostline("history", str(alice), home=home)
    assert done.returncode == 0, done.stderr
    for output in (shown, done.stdout.splitlines()):
        assert len(output) == 2, output
        assert not any(UNSAFE.search(line) for line in output), output
        assert output[0].endswith(
            "eve\\x1b[1m\\u202e: \\x1b[2J\\x1b]0;TITLE\\x07\\x1b[31mred\\u202eevil\\x9b2J\\rback"
        )
        assert output[1].endswith(": [bold]not bold[/] [link=https://evil.example]x[/link]")


def test_json_output_is_unchanged_and_carries_the_text_exactly(
    tmp_path: Path, home: Path, cleanup: Cleanup
) -> None:
    alice, bob = make_kit_set(tmp_path / "kits", ["alice", "bob"])
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    send(bob, relay, home, HOSTILE + "\n" + ATTACK)
    done = ghostline(
        "listen", str(alice), "--json", "--count", "1", "--timeout", "30", "-q",
        *relay.relay_args(), home=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["text"] == HOSTILE + "\n" + ATTACK
    # The same bytes json.dumps has always written for this record.
    assert done.stdout == json.dumps(record, ensure_ascii=False) + "\n"
    history = ghostline("history", str(alice), "--json", home=home).stdout
    entry = json.loads(history)
    assert entry["text"] == record["text"]
    assert history == json.dumps(entry, ensure_ascii=False) + "\n"


def test_a_relays_error_reason_is_quoted_escaped(tmp_path: Path, home: Path) -> None:
    (kit,) = make_kit_set(tmp_path / "kits", ["alice", "bob"])[:1]
    reason = "no\x1b[2J\x1b]0;pwned\x07 entry\n[12:00:00] bob: hi"
    with RefusingRelay(encode_error(ErrorCode.ROSTER_MISMATCH, reason)) as relay:
        done = ghostline(
            "send", str(kit), "hi", "--relay", f"127.0.0.1:{relay.port}", "--timeout", "20",
            home=home,
        )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("ghostline: error:")]
    assert errors == [
        "ghostline: error: the relay refused: no\\x1b[2J\\x1b]0;pwned\\x07 entry"
        "\\n[12:00:00] bob: hi (code 4)"
    ], lines
    assert not any(UNSAFE.search(line) for line in lines)


def test_pad_info_shows_names_from_the_kit_as_typed(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (No "/" in a name here: it would name a folder for the kit file.)
    hostile_names_allowed(monkeypatch)
    kit, _ = make_kit_set(
        tmp_path / "kits", ["[bold]al[red]", "eve\x1b[2J [b]"], group="[red]river[/] \u202e"
    )
    done = ghostline("pad", "info", str(kit), home=home)
    assert done.returncode == 0, done.stderr
    assert "Group [red]river[/] \\u202e " in done.stdout
    assert "You are [bold]al[red] (member 0 of 2)" in done.stdout
    assert "eve\\x1b[2J [b]" in done.stdout
    assert not UNSAFE.search(done.stdout)
