"""Real processes for the cluster benchmark and tests: nats-servers with JetStream (one,
or a cluster of three) and `ghostline relay --cluster` nodes, each on free loopback ports
it keeps across restarts; and a watcher of JetStream's leader elections."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from bench.procs import ROOT, free_port, wait_for_port
from ghostline.relay.cluster.layout import STREAM_PREFIX
from ghostline.relay.cluster.link import ELECTIONS

LISTENING = re.compile(r"ghostline relay: (relay|presence) listening on \S+:(\d+)")


@dataclass
class JetStreamServer:
    """One nats-server with JetStream; `start` again after `kill` keeps port and store.
    `sync`: `always` (fsync before every acknowledgement) or `default`."""

    store: Path
    sync: str = "always"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        conf = self.store / "nats.conf"
        sync = "" if self.sync == "default" else f", sync_interval: {self.sync}"
        conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{ store_dir: "{self.store / "js"}"{sync} }}\n'
        )
        proc = subprocess.Popen(
            [nats_bin(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.proc, _ = wait_for_port(proc, self.port, "nats-server with JetStream")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def nats_bin() -> str:
    return shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"


async def wait(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.02)


# --- the NATS cluster and the relay nodes ------------------------------------------------


@dataclass
class NatsCluster:
    """Three clustered nats-servers with JetStream; each keeps its ports and store."""

    root: Path
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    routes: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=lambda: [None] * 3)

    @property
    def urls(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.ports)

    def start(self, i: int) -> None:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
        conf = self.root / f"nats{i}.conf"
        conf.write_text(
            f'server_name: n{i}\nlisten: "127.0.0.1:{self.ports[i]}"\n'
            f'jetstream {{ store_dir: "{self.root / f"js{i}"}" }}\n'
            f'cluster {{ name: ghostline, listen: "127.0.0.1:{self.routes[i]}", '
            f"routes: [{routes}] }}\n"
        )
        self.procs[i] = subprocess.Popen(
            [nats_bin(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for i in range(3):
            self.kill(i)

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until JetStream answers on every server (the cluster elected a leader)."""
        import nats  # only this scenario's own probe, not the relay's client

        async def quiet(err: Exception) -> None:
            pass  # a server not up yet: the probe is tried again (nats-py would print it)

        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                try:
                    nc = await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=1,
                                            allow_reconnect=False, error_cb=quiet)  # fmt: skip
                    try:
                        await nc.jetstream(timeout=1).account_info()
                        break
                    finally:
                        await nc.close()
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)


class Node:
    """`ghostline relay --cluster` on fixed ports (a restart keeps them)."""

    def __init__(self, name: str, urls: str) -> None:
        self.name, self.urls = name, urls
        self.port, self.presence_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._from = 0  # the first line of the current run

    def start(self) -> None:
        self._from = len(self.lines)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ghostline", "relay", "--host", "127.0.0.1",
             "--port", str(self.port), "--presence-port", str(self.presence_port),
             "--cluster", self.urls, "--cluster-replicas", "3", "--node-name", self.name,
             "--publish-rate", "100000", "--publish-burst", "100000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        proc = self.proc
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace"))

    async def serving(self, timeout: float = 30.0) -> None:
        start = self._from
        try:
            await wait(
                lambda: (
                    sum(bool(LISTENING.match(x)) for x in self.lines[start:]) >= 2
                    or (self.proc is not None and self.proc.poll() is not None)
                ),
                timeout,
                f"relay {self.name} serving",
            )
        except AssertionError as err:
            raise AssertionError(f"{err}:\n" + "".join(self.lines[-20:])) from None
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"relay {self.name} exited:\n" + "".join(self.lines[-20:]))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def placement(self) -> str:
        """The last `cluster_streams` line it logged (where each stream's leader is)."""
        found = [x for x in self.lines if "event=cluster_streams" in x]
        return found[-1].split("level=info ", 1)[-1].strip() if found else ""


class Elections:
    """When JetStream elected each stream a leader (its advisories), seen from a client of
    the scenario's own."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.seen: list[tuple[float, str]] = []  # (monotonic time, stream)

    @classmethod
    async def watch(cls, urls: str) -> Elections:
        async def quiet(err: Exception) -> None:
            pass  # the server it is connected to may be the one killed: it reconnects

        nc = await nats.connect(servers=urls.split(","), max_reconnect_attempts=-1,
                                reconnect_time_wait=0.1, error_cb=quiet)  # fmt: skip
        self = cls(nc)

        async def elected(msg: Any) -> None:
            self.seen.append((time.monotonic(), msg.subject.rsplit(".", 1)[-1]))

        await nc.subscribe(ELECTIONS, cb=elected)
        await nc.flush()
        return self

    def last(self, since: float, until: float) -> float | None:
        """Seconds from `since` to the last election of a message stream before `until`."""
        times = [
            t for t, stream in self.seen if since < t <= until and stream.startswith(STREAM_PREFIX)
        ]
        return max(times) - since if times else None

    async def close(self) -> None:
        await self.nc.close()
