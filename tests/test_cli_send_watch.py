"""`ghostline send` exits once its messages are accepted: the task that watches the
connection for the "retrying" notice ends when cancelled, whatever is queued for it.

(On Python 3.11, `asyncio.wait_for` with a timeout swallows a cancel that races with a
queued event; `send` then hung at exit. Found by the 1,000-message end-to-end test.)
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from ghostline.cli.chatsend import _watch_send
from ghostline.client import ConnectionChanged


async def test_the_send_watcher_ends_when_cancelled_even_with_an_event_just_queued() -> None:
    for trial in range(100):
        client = SimpleNamespace(events=asyncio.Queue())
        # a failed attempt: the watcher now waits with a timeout for the notice
        client.events.put_nowait(ConnectionChanged("reconnecting", "relay", 1.0, "lost"))
        watcher = asyncio.ensure_future(_watch_send(client, 60.0))  # type: ignore[arg-type]
        # sleep(0) yields one turn of the event loop: the interleavings are the test.
        for _ in range(3):
            await asyncio.sleep(0)
        client.events.put_nowait(ConnectionChanged("connected", "relay", None, ""))
        for _ in range(trial % 4):
            await asyncio.sleep(0)
        watcher.cancel()
        await asyncio.wait({watcher}, timeout=5)  # a guard against the hang, not a speed goal
        assert watcher.cancelled(), f"trial {trial}: the watcher swallowed its cancel"
