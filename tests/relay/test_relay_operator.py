"""What an operator can do by mistake, with real `ghostline relay` processes (issue 9
items 5, 10, 15): a damaged store, a second relay on the same store, a umask that
would leave the store readable by everyone."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from relaytest_client import ErrorCode, Group, RawClient, RelayError, joined

from waiting import wait_until


def run_relay(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A relay expected to refuse to start: it must exit on its own."""
    return subprocess.run(
        [sys.executable, "-m", "ghostline", "relay", "--port", "0", "--presence-port", "0",
         "--store", str(store), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def publish(port: int, group: Group, member: int, counters: range, size: int = 100) -> None:
    client = await joined(port, group, member)
    for counter in counters:
        await client.publish(group.sealed(member, counter, bytes(size)))
        await client.accepted()
    await client.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_relay_on_a_store_that_fails_the_integrity_check_refuses_in_one_line(
    relay_process, tmp_path
):
    store = tmp_path / "relay.sqlite"
    relay = relay_process(store)
    asyncio.run(publish(relay.relay_port, Group(2), 0, range(40), size=3000))
    assert relay.terminate() == 0  # checkpointed: every page is in the file
    db = sqlite3.connect(store)
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'chunks'").fetchone()
    db.close()
    data = bytearray(store.read_bytes())
    at = (root - 1) * page_size  # the b-tree page header of the messages' table
    data[at : at + 8] = b"\xff" * 8
    store.write_bytes(bytes(data))

    done = run_relay(store)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"ghostline: error: the relay store {store} is damaged (")
    assert "restore it from a backup" in lines[0]
    assert store.read_bytes() == bytes(data)  # a refused start changes nothing


def test_a_second_relay_on_the_same_store_refuses_and_names_the_first(relay_process, tmp_path):
    store = tmp_path / "relay.sqlite"
    group = Group(2)
    first = relay_process(store)
    done = run_relay(store)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines == [
        f"ghostline: error: the relay store {store} is in use by relay process "
        f"{first.proc.pid}: stop that relay first, or give this one another --store"
    ]
    asyncio.run(publish(first.relay_port, group, 0, range(3)))  # the first one is unharmed
    first.kill()  # SIGKILL: the kernel drops its lock, no stale lock is left behind

    again = relay_process(store)

    async def read() -> list[int]:
        client = await RawClient.connect(again.relay_port)
        head = await client.join(group, 1)
        seqs = [(await client.deliver())[0] for _ in range(head)]
        await client.close()
        return seqs

    assert asyncio.run(read()) == [1, 2, 3]


def test_every_store_file_is_private_whatever_the_umask(relay_process, tmp_path):
    store = tmp_path / "made" / "by relay" / "relay.sqlite"
    old = os.umask(0o022)
    try:
        relay = relay_process(store)
    finally:
        os.umask(old)
    asyncio.run(publish(relay.relay_port, Group(2), 0, range(3)))
    files = [store, *(store.with_name(store.name + s) for s in ("-wal", "-shm", ".lock"))]
    wait_until(lambda: all(f.exists() for f in files), what="WAL, shared memory and lock files")
    assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
    assert oct(mode(store.parent)) == oct(mode(store.parent.parent)) == "0o700"
    relay.kill()


def test_a_store_of_an_older_layout_is_refused_in_one_line(tmp_path):
    store = tmp_path / "relay.sqlite"
    db = sqlite3.connect(store)
    db.executescript("CREATE TABLE rooms (id INTEGER PRIMARY KEY); PRAGMA user_version=3;")
    db.close()
    done = run_relay(store)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"ghostline: error: the relay store {store} has layout 3, from an earlier development"
        " version; this relay reads only layout 4: move it aside to start an empty store"
    ]


def test_a_store_that_cannot_be_created_is_a_one_line_error_not_a_listen_error(tmp_path):
    (tmp_path / "a file").write_text("not a directory")
    store = tmp_path / "a file" / "relay.sqlite"
    done = run_relay(store)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"ghostline: error: cannot open the relay store {store}: Not a directory"
    ), done.stderr


def test_a_retired_rooms_damaged_row_refuses_its_joins_with_error_9_and_a_log_line(
    relay_process, tmp_path
):
    store = tmp_path / "relay.sqlite"
    damaged, other = Group(2), Group(2)
    relay = relay_process(store)
    asyncio.run(publish(relay.relay_port, damaged, 0, range(0)))  # joins, stores nothing
    assert relay.terminate() == 0
    relay = relay_process(store)  # nobody holds it and it stores nothing: retired
    assert relay.terminate() == 0
    db = sqlite3.connect(store)
    with db:
        changed = db.execute("UPDATE retired SET head = -1 WHERE room = ?", (damaged.room,))
    assert changed.rowcount == 1
    db.close()

    relay = relay_process(store)
    with pytest.raises(RelayError) as refused:
        asyncio.run(publish(relay.relay_port, damaged, 0, range(1)))
    assert refused.value.code == ErrorCode.INTERNAL
    wait_until(
        lambda: any("event=internal_error" in line and damaged.room.hex() in line
                    for line in relay.stderr_lines),
        what="the damaged row logged with its room",
    )  # fmt: skip
    asyncio.run(publish(relay.relay_port, other, 0, range(3)))  # other rooms are served
