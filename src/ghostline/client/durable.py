"""The member's durable work, off the event loop: one worker thread, in order.

Sealing and opening commit to the state database (with an fsync) and flush the kit:
milliseconds on a good disk, far more on a slow one. The event loop must never wait on
that (it answers the relay, ticks the UI), so every call that may touch the state
database or the kit goes through one `Durable`: a single thread that runs them one at a
time, in the order the loop asked. So the order of seals and receives is the loop's, a
message is committed before its event is emitted, and no two commits of the client race.

`submit(fn, ..., then=f)` runs `f(result)` on the loop as soon as `fn` returns, whether
or not anyone still awaits it: what a commit makes true (a message to show, an entry to
send) is acted on even if the task that asked for it was cancelled meanwhile, just as
if the commit had been made on the loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Durable:
    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ghostline-durable")

    def submit(
        self, fn: Callable[..., T], *args: Any, then: Callable[[T], None] | None = None
    ) -> asyncio.Future[T]:
        """Queue `fn(*args)` behind what is queued; returns its future. `then` is called
        with the result, on the loop, when `fn` returns (not when it raises)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._worker, functools.partial(fn, *args))
        future.add_done_callback(functools.partial(_settled, then))
        return future

    async def run(
        self, fn: Callable[..., T], *args: Any, then: Callable[[T], None] | None = None
    ) -> T:
        """`submit`, and wait for it. Cancelling the wait does not stop `fn`, nor `then`."""
        return await asyncio.shield(self.submit(fn, *args, then=then))

    def close(self) -> None:
        """Let what is queued finish, then stop the thread (blocks until then)."""
        self._worker.shutdown(wait=True)


def _settled(then: Callable[[Any], None] | None, future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    error = future.exception()  # retrieved: a failure nobody awaits is no warning
    if error is None and then is not None:
        then(future.result())
