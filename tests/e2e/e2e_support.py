"""Real processes for the end-to-end tests: `ghostline listen` and `send`, a proxy.

Kits and the relay process come from tests/helpers.py.
Every wait here is bounded in time; every process started is killed at teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ghostline.frameproxy import FrameHook, FrameProxy
from waiting import wait_until

GHOSTLINE = [sys.executable, "-m", "ghostline"]


def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["GHOSTLINE_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Lines:
    """Collects a pipe's lines in a thread, so the child never blocks on a full pipe."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def join(self, timeout: float = 5) -> None:
        self._thread.join(timeout)


class Listener:
    """`ghostline listen KIT --json`: its stdout parsed, its stderr kept."""

    def __init__(self, kit: Path, relay_args: list[str], home: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [*GHOSTLINE, "listen", str(kit), "--json", *relay_args, *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env_for(home),
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout = _Lines(self.proc.stdout)
        self.stderr = _Lines(self.proc.stderr)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.stdout.lines)]

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages]

    def wait_for(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        wait_until(
            lambda: len(self.stdout.lines) >= count or self.proc.poll() is not None,
            timeout,
            f"{count} messages (have {len(self.stdout.lines)}; stderr: {self.stderr.lines[-5:]})",
        )
        return self.messages

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(10)
        self.stdout.join()
        self.stderr.join()


class Sender:
    """`ghostline send KIT --lines -`: a long-running sender fed one line per message."""

    def __init__(self, kit: Path, relay_args: list[str], home: Path) -> None:
        self.proc = subprocess.Popen(
            [*GHOSTLINE, "send", str(kit), "-", "--lines", "--timeout", "60", *relay_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env_for(home),
        )
        assert self.proc.stderr is not None
        self.stderr = _Lines(self.proc.stderr)

    def feed(self, lines: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        rc = self.proc.wait(timeout)
        self.stderr.join()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def ghostline(
    *args: str, home: Path, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GHOSTLINE, *args],
        input=input,
        capture_output=True,
        text=True,
        env=env_for(home),
        timeout=timeout,
        check=False,
    )


class ThreadedProxy:
    """A FrameProxy running in its own thread and event loop, for synchronous tests."""

    def __init__(self, target_port: int, hook: FrameHook | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxy = FrameProxy("127.0.0.1", target_port, hook)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def history(kit: Path, home: Path) -> list[dict[str, Any]]:
    done = ghostline("history", str(kit), "--json", home=home)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


class RefusingRelay:
    """A socket on 127.0.0.1 that answers every connection with the same ERROR frame, as
    a relay that refuses the handshake does (a client stops only when the same refusal
    comes on several fresh connections in a row). Use as a context manager."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = int(self.server.getsockname()[1])
        self.connections = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RefusingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._thread.join(5)
        self.server.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                self.connections += 1
                conn.settimeout(5)
                try:
                    conn.recv(4096)
                    conn.sendall(self.frame)
                except OSError:
                    pass
