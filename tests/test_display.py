"""Text from other members reaches a screen only through ghostline.display."""

from ghostline.display import body_lines, is_clean, one_line


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
