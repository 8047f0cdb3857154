"""A message of 100,000 lines does not swamp the page: it arrives folded (a few dozen
elements, not 100,000), and "Show all" fetches the whole text, shown as one block."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from browser import Browser
from test_web_browser import bubbles, cli_send, open_page
from web_support import WebProcess

from ghostline.display import FOLD_LINES
from helpers import RelayProcess

LINES = 100_000


def test_a_message_of_a_hundred_thousand_lines_is_folded_until_shown_whole(
    relay: RelayProcess,
    kits: dict[str, Path],
    start_web: Callable[..., WebProcess],
    browser: Callable[..., Browser],
    tmp_path: Path,
) -> None:
    alice_web = start_web(kits["alice"], relay.relay_args(), "alice")
    alice = open_page(browser, alice_web)
    elements = alice.js("return document.getElementsByTagName('*').length")
    text = "top" + "\n" * LINES + "bottom"
    cli_send(kits["bob"], relay, tmp_path / "home-bob", text, "after it")
    alice.wait(lambda: ["after it"] in bubbles(alice), "the message after the long one")

    long = bubbles(alice)[0]
    assert long == ["top"] + [""] * (FOLD_LINES - 1)
    assert alice.texts(".show-all") == [f"Show all ({LINES + 1 - FOLD_LINES:,} more lines)"]
    # The page grew by the folded message, not by a node per line.
    assert alice.js("return document.getElementsByTagName('*').length") < elements + 200

    alice.find(".show-all").click()
    alice.wait(lambda: len(bubbles(alice)[0]) == 2, "the whole message")
    first, rest = bubbles(alice)[0]
    assert (first, rest) == ("top", "\n" * (LINES - 1) + "bottom")
    assert alice.all(".show-all") == []
    assert alice.js("return document.getElementsByTagName('*').length") < elements + 200
