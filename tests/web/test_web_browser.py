"""Two members, each with a `ghostline web` process and a Chromium window, chatting
through a real relay process: text both ways, a file whose SHA-256 matches, hostile
text shown as characters, a relay SIGKILLed and restarted under a page that keeps
working, "new since you left", scrollback, and a used-up pad."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from browser import Browser
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.keys import Keys
from web_support import WebProcess

from ghostline.display import body_lines
from helpers import RelayProcess, make_kit_set

OpenBrowser = Callable[..., Browser]
StartWeb = Callable[..., WebProcess]


def open_page(open_browser: OpenBrowser, web: WebProcess, **kwargs: object) -> Browser:
    page = open_browser(**kwargs)
    page.open(web.url)
    page.wait(lambda: "you are" in page.texts("#whoami")[0], "the page to get its snapshot")
    return page


def type_message(page: Browser, text: str) -> None:
    box = page.find("#input")
    for i, line in enumerate(text.split("\n")):
        if i:
            box.send_keys(Keys.SHIFT, Keys.ENTER)
        box.send_keys(line)
    box.send_keys(Keys.ENTER)


def bubbles(page: Browser, who: str = ".msg") -> list[list[str]]:
    """Each message's lines as the page shows them (textContent, one entry per line)."""
    return page.js(  # type: ignore[no-any-return]
        "return Array.from(document.querySelectorAll(arguments[0])).map(m =>"
        " Array.from(m.querySelectorAll('.text-line')).map(l => l.textContent))",
        who,
    )


def cli_send(kit: Path, relay: RelayProcess, home: Path, *texts: str) -> None:
    for text in texts:
        done = subprocess.run(
            [sys.executable, "-m", "ghostline", "send", str(kit), *relay.relay_args(), "-q", "-"],
            input=text.encode(), capture_output=True, timeout=60,
            env={**os.environ, "GHOSTLINE_HOME": str(home)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


def status(page: Browser) -> list[str]:
    """The connection state classes of the page's status pill."""
    return str(page.find("#status").get_attribute("class")).split()


def test_two_members_chat_and_a_file_arrives_whole(
    relay: RelayProcess, kits: dict[str, Path], start_web: StartWeb,
    browser: OpenBrowser, tmp_path: Path,
) -> None:  # fmt: skip
    alice_web = start_web(kits["alice"], relay.relay_args(), "alice")
    bob_web = start_web(kits["bob"], relay.relay_args(), "bob")
    alice, bob = open_page(browser, alice_web), open_page(browser, bob_web)
    alice.wait(lambda: "connected" in status(alice), "alice connected")

    type_message(alice, "Hi Bob, the draft is ready.\nSecond line")
    bob.wait(lambda: bubbles(bob, ".msg:not(.own)"), "bob to see alice's message")
    assert bubbles(bob, ".msg:not(.own)") == [["Hi Bob, the draft is ready.", "Second line"]]
    assert bob.texts(".msg:not(.own) .who") == ["alice"]
    assert len(bob.all(".msg:not(.own) .text-line.cont")) == 1  # the continuation is marked
    alice.wait(lambda: alice.texts(".msg.own .state") == ["stored ✓"], "stored at the relay")
    assert alice.texts(".day span") == ["Today"]

    type_message(bob, "Thanks!")
    alice.wait(lambda: bubbles(alice, ".msg:not(.own)") == [["Thanks!"]], "bob's answer")
    alice_left = "return document.querySelector('#members li progress').value"
    bob.wait(lambda: bob.js(alice_left) < 1, "bob's view of alice's pad to go down")

    data = os.urandom(200_000)
    source = tmp_path / "report draft.pdf"
    source.write_bytes(data)
    alice.find("#file").send_keys(str(source))
    alice.wait(lambda: alice.js("return document.getElementById('offer').open"), "the offer")
    cost = alice.texts("#offer-cost")[0]
    assert "of your pad in 5 messages" in cost  # a header and four 64 KiB chunks
    assert alice.driver.switch_to.active_element.get_attribute("id") == "offer-send"
    alice.driver.switch_to.active_element.send_keys(Keys.ENTER)  # the keyboard will do

    bob.wait(lambda: bob.all("#transfers a"), "bob's save link", timeout=60)
    link = bob.find("#transfers a").get_attribute("href")
    assert link is not None and bob_web.token in link
    with urllib.request.urlopen(link, timeout=30) as answer:  # the page's own link
        served = answer.read()
        assert "attachment" in answer.headers["Content-Disposition"]
    assert hashlib.sha256(served).digest() == hashlib.sha256(data).digest()
    saved = bob_web.downloads / "report draft.pdf"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert "saved as report draft.pdf" in bob.texts("#transfers .tstatus")[0]
    alice.wait(
        lambda: "stored at the relay" in alice.texts("#transfers .tstatus")[0], "file stored"
    )
    assert alice.console_errors() == [] and bob.console_errors() == []


HOSTILE = [
    "<img src=x onerror=\"document.title='pwned'\">",
    "</script><script>document.title='pwned'</script>",
    "\x1b[2J\x1b]0;new title\x07red \x1b[31malert\u202eevil.exe\u2066",
    "ok see you then\n[18:08] alice: I agree, send bob the money",
]


def test_hostile_text_is_shown_as_the_characters_it_is(
    relay: RelayProcess, kits: dict[str, Path], start_web: StartWeb,
    browser: OpenBrowser, tmp_path: Path,
) -> None:  # fmt: skip
    alice_web = start_web(kits["alice"], relay.relay_args(), "alice")
    alice = open_page(browser, alice_web)
    # The tab is in the background and notifications are allowed: record what they say.
    alice.js(
        "window.shown = [];"
        "Object.defineProperty(document, 'hidden', {get: () => true});"
        "window.Notification = class { static permission = 'granted';"
        " constructor(title, options) { window.shown.push([title, options.body]); } };"
    )
    cli_send(kits["bob"], relay, tmp_path / "home-bob", *HOSTILE)
    alice.wait(lambda: len(alice.all(".msg")) == len(HOSTILE), "every hostile message")
    assert bubbles(alice) == [body_lines(text) for text in HOSTILE]
    assert alice.js("return window.shown") == [
        ["bob · GhostLine · Newsroom", "\n↳ ".join(body_lines(text))] for text in HOSTILE
    ]
    assert alice.js("return document.title").startswith(f"({len(HOSTILE)}) ")
    assert bubbles(alice)[2][0].startswith("\\x1b[2J\\x1b]0;new title\\x07red")
    assert "\\u202e" in bubbles(alice)[2][0]
    assert alice.all("#log img") == [] and alice.all("#log script") == []
    assert len(alice.all(".msg .text-line.cont")) == 1  # the fake "alice:" line is marked
    assert alice.js("return document.title") != "pwned"
    try:
        alert = alice.driver.switch_to.alert.text
    except NoAlertPresentException:
        alert = None
    assert alert is None
    # The same after a reload, from the history instead of live.
    alice.driver.refresh()
    alice.wait(lambda: len(alice.all(".msg")) == len(HOSTILE), "the history after a reload")
    assert bubbles(alice) == [body_lines(text) for text in HOSTILE]
    assert alice.js("return document.title") != "pwned"


def test_the_page_keeps_working_across_a_relay_restart(
    relay: RelayProcess, kits: dict[str, Path], start_web: StartWeb, browser: OpenBrowser,
) -> None:  # fmt: skip
    alice_web = start_web(kits["alice"], relay.relay_args(), "alice")
    bob_web = start_web(kits["bob"], relay.relay_args(), "bob")
    alice, bob = open_page(browser, alice_web), open_page(browser, bob_web)
    type_message(alice, "before the restart")
    bob.wait(lambda: ["before the restart"] in bubbles(bob), "the first message")
    alice.js(
        "window.seen = []; new MutationObserver(() => window.seen.push("
        "document.getElementById('status').className)).observe("
        "document.getElementById('status'), {attributes: true});"
    )
    relay.proc.kill()
    relay.proc.wait(10)
    alice.wait(lambda: "connected" not in status(alice), "alice to notice the relay is gone")
    type_message(alice, "while the relay is down")
    alice.wait(lambda: len(alice.all(".msg.own")) == 2, "the message sealed while down")
    assert alice.texts(".msg.own .state")[1] in ("sealed, not sent yet", "sending…")
    restarted = relay.restart()
    try:
        alice.wait(lambda: "connected" in status(alice), "alice to reconnect", timeout=60)
        bob.wait(
            lambda: ["while the relay is down"] in bubbles(bob), "the queued message", timeout=60
        )
        alice.wait(lambda: alice.texts(".msg.own .state")[1] == "stored ✓", "stored after all")
        assert any("reconnecting" in c.split() for c in alice.js("return window.seen"))
        type_message(bob, "after the restart")
        alice.wait(lambda: ["after the restart"] in bubbles(alice), "a message after the restart")
    finally:
        restarted.kill()


def test_new_since_you_left_and_scrollback_through_the_whole_history(
    relay: RelayProcess, kits: dict[str, Path], start_web: StartWeb,
    browser: OpenBrowser, tmp_path: Path,
) -> None:  # fmt: skip
    bob_home = tmp_path / "home-bob"
    old = [f"old message {i}" for i in range(130)]  # more than one page (100)
    cli_send(kits["bob"], relay, bob_home, "\n".join(old[:1]))
    alice_web = start_web(kits["alice"], relay.relay_args(), "alice")
    alice = open_page(browser, alice_web)
    alice.wait(lambda: len(alice.all(".msg")) == 1, "the first message")
    assert alice.all("#unread") == []  # nothing was seen before: no marker
    alice.driver.get("about:blank")  # the person closes the tab; it saw "old message 0"
    _send_lines(kits["bob"], relay, bob_home, old[1:])

    alice = open_page(browser, alice_web)
    alice.wait(lambda: ["old message 129"] in bubbles(alice), "the newest message")
    # The first unseen message is further back than one page (100): the marker stands
    # at the top of what is shown, and moves up as older messages load.
    alice.js("document.getElementById('log').scrollTop = 0")
    alice.wait(lambda: len(alice.all(".msg")) == 130, "the rest when scrolled to the top")
    shown = [lines[0] for lines in bubbles(alice)]
    assert shown == old  # the whole history, in order, nothing twice
    assert alice.all("#older:not([hidden])") == []
    after = (
        "return document.getElementById('unread').nextElementSibling"
        ".querySelector('.text-line').textContent"
    )
    assert alice.js(after) == "old message 1"
    assert alice.texts("#unread") == ["New since you left"]

    # Scrolled up, the page stays put when a message arrives, and offers a way down.
    alice.js("document.getElementById('log').scrollTop = 0")
    cli_send(kits["bob"], relay, bob_home, "one more")
    alice.wait(lambda: ["one more"] in bubbles(alice), "the new message")
    assert alice.js("return document.getElementById('log').scrollTop") == 0
    assert alice.find("#jump").is_displayed()
    alice.find("#jump").click()
    at_end = (
        "const log = document.getElementById('log');"
        "return log.scrollHeight - log.scrollTop - log.clientHeight"
    )
    alice.wait(lambda: alice.js(at_end) < 40, "the newest message in view")


def _send_lines(kit: Path, relay: RelayProcess, home: Path, lines: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ghostline", "send", str(kit), *relay.relay_args(), "-q", "-",
         "--lines"],
        input="".join(f"{line}\n" for line in lines).encode(), capture_output=True, timeout=120,
        env={**os.environ, "GHOSTLINE_HOME": str(home)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_sending_is_disabled_with_the_reason_when_the_pad_is_used_up(
    relay: RelayProcess, start_web: StartWeb, browser: OpenBrowser, tmp_path: Path,
) -> None:  # fmt: skip
    kits = make_kit_set(tmp_path / "small", ["alice", "bob"], slice_len=4096, auth_keys=3)
    web = start_web(kits[0], relay.relay_args(), "alice")
    page = open_page(browser, web)
    for i in range(3):
        assert page.find("#input").is_enabled()
        type_message(page, f"message {i}")
        page.wait(lambda i=i: len(page.all(".msg.own")) == i + 1, f"message {i} shown")
    page.wait(lambda: not page.find("#input").is_enabled(), "the composer to be disabled")
    assert not page.find("#send").is_enabled() and not page.find("#attach").is_enabled()
    assert "your pad is used up" in page.texts("#composer-note")[0]
    assert "used up" in page.texts("#banner")[0]
