"""The one way tests wait: poll a condition until it holds or a deadline passes.

Never sleep for a fixed time to let something happen; wait for the thing itself.
`until` is for async tests (it yields to the event loop between polls), `wait_until`
for plain ones (subprocesses, threads). Both fail with the `what` you give, so a
timeout says what never happened, and both return the check's last (truthy) value.

A test that drives an app through a Textual Pilot passes `poll=pilot.pause`, so the
app handles its pending messages and refreshes between two looks.

To show that something does NOT happen, do not wait and look: make something happen
that must come after it would have (a later message, the PONG to a PING), wait for
that, then assert.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

POLL = 0.01

T = TypeVar("T")


async def _sleep() -> None:
    await asyncio.sleep(POLL)


async def until(
    check: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    what: str = "",
    *,
    poll: Callable[[], Awaitable[object]] = _sleep,
) -> T:
    """Wait (async) until `check()` is truthy and return it; AssertionError after
    `timeout` seconds. `check` may be a coroutine function (a query to a server);
    `poll` is awaited between two checks."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what or check}")
        await poll()


def wait_until(check: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
    """Wait (blocking) until `check()` is truthy and return it; AssertionError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what or check}")
        time.sleep(POLL)
    return value
