"""The low-pad warning is one sentence whichever app says it: `send`/`listen` on stderr
(cli/padwarn.py), the chat app's banner and the web page's (both from
wording/padleft.py)."""

from __future__ import annotations

import pytest

from ghostline.cli.padwarn import PadWarnings
from ghostline.state.usage import PadLeft
from ghostline.web.lines import pad_view

# 1000 pad bytes and 100 keys, at each level worse than "ok".
LOW = PadLeft(bytes_left=90, bytes_total=1000, msgs_left=98, msgs_total=100)
CRITICAL = PadLeft(bytes_left=9, bytes_total=1000, msgs_left=97, msgs_total=100)
EXHAUSTED = PadLeft(bytes_left=3, bytes_total=1000, msgs_left=96, msgs_total=100)


@pytest.mark.parametrize("pad", [LOW, CRITICAL, EXHAUSTED], ids=lambda p: p.level)
def test_send_and_listen_warn_in_the_sentence_the_web_page_and_chat_app_show(
    pad: PadLeft, capsys: pytest.CaptureFixture[str]
) -> None:
    PadWarnings().check(pad)
    assert capsys.readouterr().err == f"ghostline: warning: {pad_view(pad)['warning']}\n"


def test_the_warning_says_what_runs_out_how_much_is_left_and_what_to_do() -> None:
    assert pad_view(LOW)["warning"] == (
        "Your pad is running low: 9.0% left (90 B and 98 messages). Plan a meeting with "
        "your group to make a new kit set."
    )
    assert pad_view(CRITICAL)["warning"] == (
        "Your pad is almost used up: 0.9% left (9 B and 97 messages). Meet your group soon "
        "to make a new kit set."
    )
    assert pad_view(EXHAUSTED)["warning"] == (
        "Your pad is used up: you cannot send with this kit any more. You can still read "
        "what others send. Meet the group in person and make a new kit set with "
        "`ghostline pad new`."
    )
