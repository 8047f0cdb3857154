"""The page at phone and desktop widths: nothing wider than the screen, the side panel
behind a button on a phone. Takes the README's screenshots: to a temporary folder in
`make test`, to docs/ with `make screenshots` (GHOSTLINE_SCREENSHOTS=docs)."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

from browser import DESKTOP, PHONE, Browser
from test_web_browser import bubbles, cli_send, open_page, type_message
from web_support import WebProcess

from helpers import RelayProcess, make_kit_set


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def show_at(page: Browser, size: tuple[int, int], *, mobile: bool) -> None:
    """The viewport exactly `size` (a window size would include the browser's frame)."""
    page.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile},
    )
    page.js("document.getElementById('log').scrollTop = 1e9")


def test_the_page_fits_a_phone_and_a_desktop_and_is_photographed(
    relay: RelayProcess, start_web: Callable[..., WebProcess],
    browser: Callable[..., Browser], tmp_path: Path,
) -> None:  # fmt: skip
    out = Path(os.environ.get("GHOSTLINE_SCREENSHOTS") or tmp_path / "screenshots")
    kits = make_kit_set(
        tmp_path / "team", ["alice", "bob", "carol"], slice_len=1 << 20, auth_keys=4096,
        group="Newsroom",
    )  # fmt: skip
    alice_web = start_web(kits[0], relay.relay_args(), "alice")
    bob_web = start_web(kits[1], relay.relay_args(), "bob")
    alice, bob = open_page(browser, alice_web), open_page(browser, bob_web)
    carol_home = tmp_path / "home-carol"

    type_message(bob, "Morning! Did the source get back to you?")
    alice.wait(lambda: len(alice.all(".msg")) == 1, "bob's first message")
    type_message(alice, "Yes. She will meet us on Thursday at 10, same place as last time.")
    alice.wait(lambda: alice.texts(".msg.own .state") == ["stored ✓"], "alice's answer stored")
    carol_says = "Great. I'll bring the printed documents.\nNothing goes over email this time."
    cli_send(kits[2], relay, carol_home, carol_says)
    alice.wait(lambda: len(alice.all(".msg")) == 3, "carol's message")
    type_message(bob, "Agreed. Here is the draft, version 3:")
    draft = tmp_path / "draft-v3.pdf"
    draft.write_bytes(os.urandom(180_000))
    bob.find("#file").send_keys(str(draft))
    bob.wait(lambda: bob.js("return document.getElementById('offer').open"), "the offer")
    bob.find("#offer-send").click()
    alice.wait(lambda: alice.all("#transfers a"), "the draft saved on alice's side", timeout=60)
    type_message(alice, "Got it, reading now.\nI'll send my notes tonight.")
    alice.wait(lambda: ["Got it, reading now.", "I'll send my notes tonight."] in bubbles(alice),
               "alice's last message")  # fmt: skip
    alice.wait(lambda: all(s == "stored ✓" for s in alice.texts(".msg.own .state")), "stored")
    alice.find("#input").send_keys("Thanks both")

    show_at(alice, DESKTOP, mobile=False)
    alice.wait(lambda: alice.find("#side").is_displayed(), "the side panel on a desktop")
    assert alice.js("return document.documentElement.scrollWidth") <= DESKTOP[0]
    alice.screenshot(out / "web-desktop.png")

    show_at(alice, PHONE, mobile=True)
    alice.wait(lambda: not alice.find("#side").is_displayed(), "the side panel folded away")
    assert alice.find("#panel-toggle").is_displayed()
    assert alice.js("return document.documentElement.scrollWidth") <= PHONE[0]
    alice.screenshot(out / "web-phone.png")
    alice.find("#panel-toggle").click()
    alice.wait(lambda: alice.find("#side").is_displayed(), "the side panel on request")
    assert alice.js("return document.documentElement.scrollWidth") <= PHONE[0]

    assert png_size(out / "web-desktop.png") == DESKTOP
    assert png_size(out / "web-phone.png") == PHONE
