"""The one way tests wait: poll a condition until it holds or a deadline passes.

Never sleep for a fixed time to let something happen; wait for the thing itself.
`until` is for async tests (it yields to the event loop between polls), `wait_until`
for plain ones (subprocesses, threads). Both fail with the `what` you give, so a
timeout says what never happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL = 0.01


async def until(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Wait (async) until `check()` is truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what or check}")
        await asyncio.sleep(POLL)


def wait_until(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Wait (blocking) until `check()` is truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what or check}")
        time.sleep(POLL)
