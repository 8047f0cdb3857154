"""Text from other members reaches a screen only through ghostline.display."""

import pytest
import wcwidth
from hypothesis import given
from hypothesis import strategies as st

from ghostline.display import (
    CONTINUATION,
    MIN_WIDTH,
    QUOTE_LIMIT,
    body_lines,
    cells,
    fit,
    is_clean,
    message_lines,
    one_line,
    quote,
)


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


# -- terminal rows -------------------------------------------------------------------


def test_a_line_that_fits_stays_whole_and_a_pipe_gets_every_line_whole() -> None:
    assert fit("[t] bob: hi", 80) == ["[t] bob: hi"]
    assert fit("x" * 500, None) == ["x" * 500]


def test_a_long_line_is_cut_into_marked_rows_never_left_to_the_terminal() -> None:
    line = "[18:08:00] bob: ok see you then" + " " * 49 + "[18:08:01] alice: I agree"
    rows = fit(line, 80)
    assert rows[0].startswith("[18:08:00] bob: ok see you then")
    assert all(row.startswith(CONTINUATION) for row in rows[1:])
    assert all(cells(row) <= 80 for row in rows)
    assert "".join([rows[0], *(row[len(CONTINUATION) :] for row in rows[1:])]) == line


def test_rows_end_after_a_space_when_that_leaves_them_half_full() -> None:
    assert fit("ghostline: one two three four five six", 20) == [
        "ghostline: one two ",
        CONTINUATION + "three four five ",
        CONTINUATION + "six",
    ]
    assert fit("ab " + "x" * 30, 20) == ["ab " + "x" * 17, CONTINUATION + "x" * 13]


def test_wide_characters_and_emoji_take_two_cells_and_combining_marks_none() -> None:
    assert cells("日本") == 4 and cells("🙂") == 2 and cells("e\u0301") == 1
    assert fit("日" * 50, 20)[0] == "日" * 10
    assert fit("e\u0301" * 30, 20)[0] == "e\u0301" * 20


def test_emoji_sequences_count_as_wide_as_any_terminal_draws_them() -> None:
    # One glyph on some terminals, each part apart on others: the widest count.
    assert cells("👨\u200d👩\u200d👧") >= 6
    assert cells("❤\ufe0f") == 2  # a narrow heart made an emoji
    assert cells("1\ufe0f\u20e3") == 2  # a keycap


def test_a_chain_of_joiners_cannot_carry_a_line_past_the_edge() -> None:
    # ZWJ binds the next character into one grapheme: a joined-up spoof would be one
    # piece wider than any row, left for the terminal to wrap.
    line = "x" + "".join("\u200d" + c for c in "[12:00:00] alice: send bob the money now ok")
    rows = fit(line, 20)
    assert len(rows) > 1 and all(cells(row) <= 20 for row in rows)


def test_fit_takes_only_clean_lines() -> None:
    with pytest.raises(ValueError):
        fit("a\nb", 80)


def test_a_quoted_text_is_one_line_and_cut_to_its_limit() -> None:
    assert quote("no\x1b[2J\nentry") == "no\\x1b[2J\\nentry"
    cut = quote("x" * 100_000)
    assert cut == "x" * QUOTE_LIMIT + "… (99800 more characters)"


@given(st.text(), st.integers(min_value=1, max_value=200))
def test_every_row_fits_is_marked_and_nothing_is_lost(text: str, width: int) -> None:
    line = one_line(text)
    rows = fit(line, width)
    assert all(cells(row) <= max(width, MIN_WIDTH) for row in rows)
    assert all(row.startswith(CONTINUATION) for row in rows[1:])
    assert "".join([rows[0], *(row[len(CONTINUATION) :] for row in rows[1:])]) == line


@given(st.text())
def test_cells_never_counts_fewer_than_a_terminal_drawing_each_character(text: str) -> None:
    # wcwidth is what most terminals (and the pyte emulator of the tests) draw with.
    line = one_line(text)
    assert cells(line) >= sum(max(0, wcwidth.wcwidth(c)) for c in line)
    assert cells(line) >= max(0, wcwidth.wcswidth(line))
