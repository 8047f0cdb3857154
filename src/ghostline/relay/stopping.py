"""Stopping a task for good.

One `cancel()` can be lost. On Python 3.11, `asyncio.wait_for` returns a result that
arrived in the same turn of the event loop as the cancellation, and the cancellation is
dropped (Python 3.12 fixed it); nats-py waits for every request that way. A loop that
then goes on (the relay's sweep, a cluster node's watchers) would never end, and a relay
told to stop would hang. So a task is cancelled again until it is done.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

AGAIN = 0.1  # seconds between two cancellations of a task that has not ended


async def stop(task: asyncio.Future[Any], *, tries: int | None = None) -> BaseException | None:
    """Cancel `task` until it has ended (or `tries` times, AGAIN apart, when given: a
    task that is not ours is then left as it is). Returns the exception it failed with,
    or None when it returned, was cancelled or is still running."""
    attempts = itertools.count() if tries is None else range(tries)
    for _ in attempts:
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=AGAIN)
    if not task.done() or task.cancelled():
        return None
    return task.exception()
