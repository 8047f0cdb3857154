"""Text from other members reaches a screen only through ghostline.display."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghostline.display import CONTINUATION, body_lines, is_clean, message_lines, one_line


def test_escape_sequences_are_shown_not_interpreted() -> None:
    shown = one_line("\x1b[2J\x1b]0;TITLE\x07\x1b[31mred")
    assert "\x1b" not in shown and "\x07" not in shown
    assert shown == "\\x1b[2J\\x1b]0;TITLE\\x07\\x1b[31mred"


def test_c1_controls_and_bidi_overrides_are_escaped() -> None:
    assert one_line("a\x85b\x9bc") == "a\\x85b\\x9bc"
    assert one_line("evil\u202etxt.exe\u2066x\u2069") == "evil\\u202etxt.exe\\u2066x\\u2069"


def test_a_name_cannot_break_the_line() -> None:
    assert one_line("bob\n[12:00:00] alice: hi") == "bob\\n[12:00:00] alice: hi"
    assert one_line("x\u2028y\u2029z\rw") == "x\\u2028y\\u2029z\\rw"


def test_body_lines_split_only_on_newline_and_clean_each_line() -> None:
    assert body_lines("ok\n[18:08:01] alice: send\x1b[2J\r") == [
        "ok",
        "[18:08:01] alice: send\\x1b[2J\\r",
    ]


def test_printable_text_of_any_script_is_unchanged() -> None:
    text = "café 日本語 مرحبا 🙂 ok"
    assert one_line(text) == text and is_clean(text)
    assert not is_clean("a\tb") and one_line("a\tb") == "a    b"


def test_continuation_lines_are_marked_and_the_tail_ends_the_last() -> None:
    assert message_lines("[18:08:00] mallory: ", "ok see you then\n[18:08:01] alice: pay") == [
        "[18:08:00] mallory: ok see you then",
        CONTINUATION + "[18:08:01] alice: pay",
    ]
    assert message_lines("[t] you: ", "one", " (not yet sent)") == ["[t] you: one (not yet sent)"]
    assert message_lines("[t] you: ", "a\nb", "!") == ["[t] you: a", CONTINUATION + "b!"]


@pytest.mark.parametrize("head", ["", " [t] x: ", "\t[t] x: ", "[t] a\nb: ", "[t] \x1b: "])
def test_a_head_that_could_pass_for_a_continuation_or_break_a_line_is_refused(head: str) -> None:
    with pytest.raises(ValueError):
        message_lines(head, "text")


@given(st.text(), st.text(min_size=1).map(one_line).filter(lambda s: not s[0].isspace()))
def test_no_line_of_a_message_body_can_start_like_a_message(body: str, head: str) -> None:
    lines = message_lines(head, body)
    assert lines[0].startswith(head)
    assert all(line.startswith(CONTINUATION) for line in lines[1:])
    assert len(lines) == body.count("\n") + 1
    # Nothing in any line can start a new line on a terminal or rewrite one.
    assert all(is_clean(line) for line in lines)
