"""Relay fixtures: an in-process relay on port 0, and a real `ghostline relay` process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from ghostline.relay import RelayLimits, RelayServer, Retention, SqliteBackend

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


_LISTEN = re.compile(r"^ghostline relay: (relay|presence) listening on (\S+):(\d+)")


@dataclass
class RelayProcess:
    proc: subprocess.Popen[bytes]
    relay_port: int
    presence_port: int
    stderr_lines: list[str] = field(default_factory=list)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


def spawn_relay(store: Path, *args: str) -> RelayProcess:
    """`python -m ghostline relay --port 0 --presence-port 0 --store STORE`, ports from stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ghostline", "relay", "--port", "0", "--presence-port", "0",
         "--store", str(store), *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stderr is not None
    ports: dict[str, int] = {}
    lines: list[str] = []
    while len(ports) < 2:
        line = proc.stderr.readline().decode()
        if not line:
            raise RuntimeError("relay exited early:\n" + "".join(lines))
        lines.append(line)
        match = _LISTEN.match(line)
        if match:
            ports[match.group(1)] = int(match.group(3))
    rp = RelayProcess(proc, ports["relay"], ports["presence"], lines)

    def pump() -> None:  # keep reading, so a full pipe never blocks the relay's logging
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append(raw.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()
    return rp


@pytest.fixture
def relay_process() -> Iterator[Callable[..., RelayProcess]]:
    started: list[RelayProcess] = []

    def start(store: Path, *args: str) -> RelayProcess:
        started.append(spawn_relay(store, *args))
        return started[-1]

    yield start
    for rp in started:
        if rp.proc.poll() is None:
            rp.proc.kill()
            rp.proc.wait(10)
