"""Restoring a backup (review finding): a restored store has an older head than members
have read, so it must come back with a new store id, or members that had read further
skip the new messages that take the seqs again. With real processes: a relay (SQLite,
and a cluster node on a nats-server), `ghostline send` and `listen` as members, and the
operator's `ghostline relay restore` and `new-store-id`."""

# ruff: noqa: F811 - pytest fixtures imported from clusterkit are test parameters
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from bench.natskit import JetStreamServer
from clusterkit import nats_server, needs_nats  # noqa: F401 - a fixture

from helpers import RelayProcess, kits_by_name, make_kit_set

GHOSTLINE = [sys.executable, "-m", "ghostline"]


def run(*args: str, home: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GHOSTLINE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*GHOSTLINE, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


class Members:
    """alice sends, bob listens, through `ghostline send` and `listen`."""

    def __init__(self, tmp_path: Path) -> None:
        self.kits = kits_by_name(make_kit_set(tmp_path / "kits", ["alice", "bob"]))
        self.home = tmp_path / "home"

    def listen(self, relay: RelayProcess, count: int) -> tuple[list[str], str]:
        done = run(
            "listen", str(self.kits["bob"]), *relay.relay_args(), "--count", str(count),
            "--timeout", "40", home=self.home,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [line.split(": ", 1)[1] for line in done.stdout.splitlines()], done.stderr


def send_lines(members: Members, relay: RelayProcess, texts: list[str]) -> None:
    env = {**os.environ, "GHOSTLINE_HOME": str(members.home), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [*GHOSTLINE, "send", str(members.kits["alice"]), "-", "--lines", *relay.relay_args()],
        input="".join(f"{t}\n" for t in texts), capture_output=True, text=True, env=env,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_store_restored_with_relay_restore_gets_a_new_id_and_members_miss_nothing(
    relay_process, tmp_path
):
    store, backup = tmp_path / "relay.sqlite", tmp_path / "backup.sqlite"
    members = Members(tmp_path)
    relay = relay_process(store)
    send_lines(members, relay, ["one", "two", "three"])
    with sqlite3.connect(store) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)  # what `sqlite3 relay.sqlite ".backup backup.sqlite"` does
    send_lines(members, relay, ["four", "five", "six"])
    assert members.listen(relay, 6)[0] == ["one", "two", "three", "four", "five", "six"]
    assert relay.terminate() == 0  # bob's cursor is at seq 6; the backup's head is 3

    locked = relay_process(tmp_path / "other.sqlite")  # (a relay holding a store refuses)
    refused = run("relay", "restore", str(backup), "--store", str(locked.store), home=members.home)
    assert refused.returncode == 1 and "in use by relay process" in refused.stderr

    done = run("relay", "restore", str(backup), "--store", str(store), home=members.home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"restored {backup} to {store} with a new store id (")
    aside = sorted(tmp_path.glob("relay.sqlite.before-restore-*"))
    assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))], aside

    relay = relay.restart()
    try:
        send_lines(members, relay, ["seven", "eight"])  # seqs 4 and 5 again, below bob's 6
        shown, stderr = members.listen(relay, 2)
    finally:
        relay.kill()  # (a restarted relay is not the fixture's to stop)
    assert shown == ["seven", "eight"]
    assert "has another message store than before" in stderr


def test_new_store_id_refuses_a_missing_store_in_one_line(tmp_path):
    done = run("relay", "new-store-id", "--store", str(tmp_path / "none.sqlite"),
               home=tmp_path / "home")  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"ghostline: error: cannot open the relay store {tmp_path / 'none.sqlite'}: there is"
        " no relay store there; check that its directory can be created and written by this"
        " user, or give --store another file"
    ]


@needs_nats
def test_a_cluster_restored_from_a_copy_of_its_jetstream_gets_a_new_store_id(
    nats_server: JetStreamServer, relay_process, tmp_path
):
    members = Members(tmp_path)
    cluster = ("--cluster", nats_server.url, "--node-name", "a")
    node = relay_process(tmp_path / "unused.sqlite", *cluster)
    send_lines(members, node, ["one", "two", "three"])
    node.terminate()
    nats_server.kill()
    saved = tmp_path / "js-backup"
    shutil.copytree(nats_server.store / "js", saved)  # a stopped server's store_dir
    nats_server.start()
    node = node.restart()
    try:
        send_lines(members, node, ["four", "five", "six"])
        assert members.listen(node, 6)[0] == ["one", "two", "three", "four", "five", "six"]
        running = run("relay", "new-store-id", "--cluster", nats_server.url, home=members.home)
    finally:
        node.terminate()  # (a restarted relay is not the fixture's to stop)
    assert running.returncode == 1
    assert "relay nodes are running on this cluster: a: stop every relay node" in running.stderr

    nats_server.kill()
    shutil.rmtree(nats_server.store / "js")
    shutil.copytree(saved, nats_server.store / "js")  # restored: heads back at 3
    nats_server.start()
    done = run("relay", "new-store-id", "--cluster", nats_server.url, home=members.home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"the cluster at {nats_server.url} has a new store id (")

    node = node.restart()
    try:
        send_lines(members, node, ["seven", "eight"])
        shown, stderr = members.listen(node, 2)
    finally:
        node.kill()
    assert shown == ["seven", "eight"]
    assert "has another message store than before" in stderr
