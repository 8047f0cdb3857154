"""A cluster node that cannot start says why, with real nats-servers (issue 12, "Start-up
failures"): NATS unreachable is a "waiting for NATS" line, then serving once NATS
answers; no JetStream, or more replicas than servers, is one line and exit status 1."""

# ruff: noqa: F811 - pytest fixtures imported from clusterkit are test parameters
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from bench.natskit import JetStreamServer
from bench.procs import start_nats
from clusterkit import nats_server, needs_nats  # noqa: F401 - a fixture

from helpers import RELAY_LISTENING, free_port
from waiting import wait_until

pytestmark = needs_nats


class Starting:
    """`ghostline relay --cluster ...` that may not serve yet: its stderr, line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ghostline", "relay", "--port", "0", "--presence-port", "0",
             "--node-name", "starting", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace"))

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def serving(self) -> bool:
        return sum(bool(RELAY_LISTENING.match(x)) for x in list(self.lines)) == 2

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.finish()


def test_a_node_whose_nats_is_not_up_says_it_waits_and_serves_once_nats_answers(tmp_path):
    # Until NATS starts, its port takes connections and closes them (counted: the node's
    # tries), as a server that is not ready would.
    refuser = socket.create_server(("127.0.0.1", 0))
    tries = []

    def refuse() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = refuser.accept()
                tries.append(1)
                conn.close()

    threading.Thread(target=refuse, daemon=True).start()
    nats = JetStreamServer(tmp_path / "nats", port=refuser.getsockname()[1])
    node = Starting("--cluster", nats.url)
    try:
        wait_until(lambda: len(tries) >= 4, timeout=30, what="the node trying again and again")
        waiting = [x for x in list(node.lines) if "waiting for NATS" in x]
        assert len(waiting) == 1, node.lines  # said once, not once per try
        assert waiting[0].startswith(f"ghostline relay: waiting for NATS at {nats.url} (")
        assert waiting[0].endswith(
            "): not serving until it answers; trying every 0.5 s, for as long as it takes"
            " (said again every 30 s)\n"
        )
        assert not node.said("nats_error") and not node.serving()
        refuser.close()
        nats.start()
        wait_until(node.serving, timeout=60, what="serving once NATS answers")
    finally:
        refuser.close()
        node.kill()
        nats.kill()


def test_the_wait_names_a_refused_connection_as_such(tmp_path):
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    node = Starting("--cluster", url)
    try:
        wait_until(lambda: node.said("waiting for NATS at"), timeout=30, what="the wait said")
        assert node.lines[0].startswith(
            f"ghostline relay: waiting for NATS at {url} (connection refused): not serving"
        )
    finally:
        node.kill()


def test_sigterm_ends_the_wait_for_nats(tmp_path):
    node = Starting("--cluster", f"nats://127.0.0.1:{free_port()}")
    try:
        wait_until(lambda: node.said("waiting for NATS at"), timeout=30, what="the wait said")
        node.proc.send_signal(signal.SIGTERM)
        assert node.finish() == 0
        assert node.lines[-1] == "ghostline relay: stopped (it never served)\n"
    finally:
        node.kill()


def test_a_nats_without_jetstream_is_refused_in_one_line():
    proc, port = start_nats()  # core NATS only
    node = Starting("--cluster", f"nats://127.0.0.1:{port}")
    try:
        assert node.finish() == 1
        assert node.lines == [
            f"ghostline: error: NATS at nats://127.0.0.1:{port} does not run JetStream, where"
            " the cluster keeps its rooms: start nats-server with -js (or a jetstream {"
            " store_dir: ... } block in its configuration)\n"
        ]
    finally:
        node.kill()
        proc.kill()
        proc.wait(10)


def test_three_replicas_on_one_nats_server_is_refused_in_one_line(nats_server):
    node = Starting("--cluster", nats_server.url, "--cluster-replicas", "3")
    try:
        assert node.finish() == 1
    finally:
        node.kill()
    assert len(node.lines) == 1, node.lines
    assert node.lines[0].startswith(
        "ghostline: error: --cluster-replicas 3 needs a NATS cluster of at least 3 servers,"
        f" but NATS at {nats_server.url} is a single server ("
    )
    assert "use --cluster-replicas 1" in node.lines[0]


def test_a_node_on_a_good_nats_still_starts(nats_server, tmp_path: Path):
    node = Starting("--cluster", nats_server.url)
    try:
        wait_until(node.serving, timeout=60, what="serving")
        assert not node.said("waiting for NATS")
    finally:
        node.kill()


def test_a_node_whose_nats_went_away_says_so_on_health_and_in_its_metrics(nats_server):
    node = Starting("--cluster", nats_server.url, "--metrics-port", "0")
    try:
        wait_until(lambda: node.said("health and metrics on"), timeout=60, what="serving")
        line = next(x for x in node.lines if "health and metrics on" in x)
        port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        assert _get(port, "/health") == (200, "ok\n")
        nats_server.kill()
        wait_until(lambda: _get(port, "/health")[0] == 503, timeout=30, what="unhealthy")
        assert _get(port, "/health") == (503, "NATS unreachable\n")
        text = _get(port, "/metrics")[1]
        assert "ghostline_relay_nats_connected 0" in text
        assert 'ghostline_relay_up{backend="cluster"} 0' in text
        assert 'ghostline_relay_jetstream_errors_total{kind="disconnected"} 1' in text
        nats_server.start()
        wait_until(lambda: _get(port, "/health")[0] == 200, timeout=60, what="healthy again")
    finally:
        node.kill()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
