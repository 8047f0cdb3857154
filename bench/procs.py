"""The server processes a benchmark runs: `ghostline relay` and a core nats-server
started on free loopback ports, and stopped with SIGTERM, a bounded wait, then SIGKILL
for any that does not exit in time."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A knob for investigating, not for the report: BENCH_RELAY_PREFIX="-m cProfile -o
# relay.prof" runs each relay start_relay starts (unless given a prefix) under it.
PREFIX = os.environ.get("BENCH_RELAY_PREFIX", "").split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_relay(
    *backend: str, prefix: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """`ghostline relay` on free ports with its limits opened up for load; `backend` is
    `--store PATH` or `--cluster URL --node-name NAME`; `prefix`: Python options (e.g.
    a profiler). Returns the process and port."""
    proc, port, _ = launch_relay(
        [*backend, "--publish-rate", "1e9", "--publish-burst", "1000000000",
         "--max-connections-per-address", "100000", "--new-room-burst", "1000000",
         "--send-buffer", str(64 * 2**20), "--log-level", "warning"],
        PREFIX if prefix is None else prefix,
    )  # fmt: skip
    return proc, port


def launch_relay(
    args: list[str], prefix: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], int, list[str]]:
    """`ghostline relay` on free ports with `args` (after Python options `prefix`);
    returns it, its relay port, and the lines it logs (added to as they come)."""
    proc = subprocess.Popen(
        [sys.executable, *(prefix or []), "-m", "ghostline", "relay", "--port", "0",
         "--presence-port", "0", *args],
        stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    port = 0
    while not port:
        line = proc.stderr.readline().decode()
        if not line:
            raise RuntimeError("the relay did not start:\n" + "".join(lines[-20:]))
        lines.append(line)
        if match := re.match(r"ghostline relay: relay listening on \S+:(\d+)", line):
            port = int(match.group(1))
    stream = proc.stderr

    def drain() -> None:
        for raw in stream:
            lines.append(raw.decode("utf-8", "replace"))

    threading.Thread(target=drain, daemon=True).start()
    return proc, port, lines


def start_nats() -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-a", "127.0.0.1", "-p", str(port), "-m", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return wait_for_port(proc, port, "nats-server")


def wait_for_port(
    proc: subprocess.Popen[bytes], port: int, what: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Wait (10 s at most) until `proc` accepts connections on `port`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float) -> None:
    procs = list(procs)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
