"""A relay told to stop stops, even when a cancellation is lost on the way (on Python
3.11 `asyncio.wait_for`, under every nats-py request, drops a cancellation that comes in
the same turn as the answer): relay/stopping.py cancels until the task has ended."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ghostline.relay import SqliteBackend
from ghostline.relay.config import RelayLimits
from ghostline.relay.server import RelayServer
from ghostline.relay.stopping import stop
from waiting import until


async def test_a_task_that_loses_a_cancellation_is_still_stopped() -> None:
    lost = 0

    async def loses_one() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # as asyncio.wait_for may on Python 3.11: and on it goes

    task = asyncio.ensure_future(loses_one())
    await asyncio.sleep(0)
    assert await asyncio.wait_for(stop(task), 10) is None
    assert task.cancelled() and lost == 1


async def test_stopping_a_task_that_failed_gives_its_error() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    task = asyncio.ensure_future(fails())
    await asyncio.sleep(0)
    err = await stop(task)
    assert isinstance(err, ValueError) and str(err) == "broken"


class _SweepLosesACancel(SqliteBackend):
    """A store whose age sweep, once under way, swallows the cancellation that stops it
    and returns, as a sweep waiting on a NATS answer can on Python 3.11."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.sweeping = asyncio.Event()

    async def expire(self, now: float) -> int:
        self.sweeping.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return 0
        return 0


async def test_a_relay_stops_even_when_its_sweep_loses_the_cancellation(tmp_path: Path) -> None:
    backend = _SweepLosesACancel(tmp_path / "relay.sqlite")
    server = RelayServer(backend, RelayLimits(idle_timeout=0.2))
    await server.start("127.0.0.1", 0, 0)
    await until(backend.sweeping.is_set, what="the age sweep under way")
    closing = asyncio.ensure_future(server.close())
    done, _ = await asyncio.wait({closing}, timeout=10)  # a bound, not a pause
    try:
        assert closing in done, "the relay did not stop"
        assert server._sweeper is not None and server._sweeper.done()
    finally:
        await stop(closing)
        if server._sweeper is not None:
            await stop(server._sweeper)


async def test_stopping_with_a_number_of_tries_leaves_a_task_that_outlasts_them() -> None:
    ignoring = True

    async def ignores_cancels() -> None:
        while ignoring:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                continue

    task = asyncio.ensure_future(ignores_cancels())
    await asyncio.sleep(0)
    assert await stop(task, tries=3) is None
    assert not task.done()
    ignoring = False
    assert await stop(task) is None and task.done()
