"""A real `ghostline web` process for the browser tests, and plain HTTP requests to it."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from waiting import wait_until

URL_LINE = re.compile(r"^ghostline web: open (http://([^/]+):(\d+)/\?t=([A-Za-z0-9_-]+))$")


class WebProcess:
    """`python -m ghostline web KIT ... --no-browser`, with its own GHOSTLINE_HOME; the
    URL (with the token) read from stdout, every line of both streams kept."""

    def __init__(self, kit: Path, relay_args: list[str], home: Path, *extra: str) -> None:
        self.home = home
        env = {**os.environ, "GHOSTLINE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ghostline", "web", str(kit), *relay_args, "--no-browser",
             *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        wait_until(
            lambda: self._url() is not None or self.proc.poll() is not None,
            60,
            "ghostline web to print its address",
        )
        found = self._url()
        if found is None:
            self.kill()
            raise AssertionError("ghostline web did not start:\n" + "\n".join(self.stderr))
        self.url, self.host, self.port, self.token = found
        self.url_line = f"ghostline web: open {self.url}"

    @staticmethod
    def _read(stream: object, into: list[str]) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            into.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def _url(self) -> tuple[str, str, int, str] | None:
        for line in list(self.stdout):
            if match := URL_LINE.match(line):
                return match.group(1), match.group(2), int(match.group(3)), match.group(4)
        return None

    @property
    def downloads(self) -> Path:
        return self.home / "downloads"

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> http.client.HTTPResponse:
        """A raw request (no browser): `headers` as given, Host included when set."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.putrequest(method, path, skip_host="Host" in (headers or {}))
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response

    def stop(self) -> int:
        """SIGTERM: the way Ctrl+C or a service manager stops it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for reader in self._readers:
            reader.join(5)
