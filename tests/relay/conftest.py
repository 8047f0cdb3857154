"""Relay fixtures: an in-process relay on port 0, and a real `ghostline relay` process
(`helpers.RelayProcess`: import it from helpers, never from a conftest, which is a
different module depending on which folder pytest collects first)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ghostline.relay import RelayLimits, RelayServer, Retention, SqliteBackend
from helpers import RelayProcess

MakeRelay = Callable[..., Awaitable[RelayServer]]


@pytest.fixture
async def make_relay(tmp_path: Path) -> AsyncIterator[MakeRelay]:
    """Start in-process relays on 127.0.0.1 port 0; keyword arguments set RelayLimits."""
    servers: list[RelayServer] = []

    async def start(
        store: Path | None = None, ssl_context: object = None, **limits: object
    ) -> RelayServer:
        retention = limits.pop("retention", Retention())
        config = replace(RelayLimits(), retention=retention, **limits)  # type: ignore[arg-type]
        backend = SqliteBackend(store or tmp_path / f"relay{len(servers)}.sqlite", retention)  # type: ignore[arg-type]
        server = RelayServer(backend, config, ssl_context=ssl_context)  # type: ignore[arg-type]
        await server.start("127.0.0.1", 0, 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def relay(make_relay: MakeRelay) -> RelayServer:
    return await make_relay()


@pytest.fixture
def relay_process() -> Iterator[Callable[..., RelayProcess]]:
    started: list[RelayProcess] = []

    def start(store: Path, *args: str) -> RelayProcess:
        started.append(RelayProcess(store, *args))
        return started[-1]

    yield start
    for rp in started:
        rp.kill()
