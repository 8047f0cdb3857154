"""Fixtures for the web app's tests: a relay process, kits, `ghostline web` processes
and headless Chromium windows, every one stopped at teardown."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from browser import DESKTOP, Browser, available
from web_support import WebProcess

from helpers import RelayProcess, make_kit_set


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    holder = [RelayProcess(tmp_path / "relay.sqlite")]
    yield holder[0]
    holder[0].kill()


@pytest.fixture
def kits(tmp_path: Path) -> dict[str, Path]:
    paths = make_kit_set(
        tmp_path / "kits", ["alice", "bob"], slice_len=1 << 20, auth_keys=512, group="Newsroom"
    )
    return {p.stem: p for p in paths}


@pytest.fixture
def start_web(tmp_path: Path) -> Iterator[Callable[..., WebProcess]]:
    """`start_web(kit, relay_args, name)`: a `ghostline web` with home tmp/NAME."""
    started: list[WebProcess] = []

    def start(kit: Path, relay_args: list[str], name: str, *extra: str) -> WebProcess:
        home = tmp_path / f"home-{name}"
        home.mkdir(exist_ok=True)
        started.append(WebProcess(kit, relay_args, home, *extra))
        return started[-1]

    yield start
    for web in started:
        with contextlib.suppress(Exception):
            web.kill()


@pytest.fixture
def browser() -> Iterator[Callable[..., Browser]]:
    """`browser(size)`: a new headless Chromium window (fails, saying why, without one)."""
    missing = available()
    if missing:
        pytest.fail(missing)
    opened: list[Browser] = []

    def open_browser(size: tuple[int, int] = DESKTOP) -> Browser:
        opened.append(Browser(size))
        return opened[-1]

    yield open_browser
    for b in opened:
        with contextlib.suppress(Exception):
            b.close()
