"""Many idle members cost the relay little (issue 12, "Connections"; the 10,000-member
measurement is in `make bench`): 1,000 authenticated connections in 200 rooms, from 20
loopback addresses within the default per-address limits, add less than 20 KiB each to
the relay process, a SQLite relay or a cluster node (which also subscribes to each room
it hosts), and an honest group still talks through it."""

# ruff: noqa: F811 - pytest fixtures imported from clusterkit are test parameters

from __future__ import annotations

import sys
from pathlib import Path

from clusterkit import nats_server, needs_nats  # noqa: F401 - fixtures
from relaytest_client import Group, joined

from helpers import RelayProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/, for its kit
from bench.connkit import close_all, join_idle, open_fds, rss  # noqa: E402

from waiting import until  # noqa: E402

ROOMS, PER_ROOM, SOURCES = 200, 5, 20
GOAL = 20 * 1024  # bytes of relay memory per idle member connection


async def test_a_thousand_idle_members_cost_the_relay_under_20_kib_each(relay_process, tmp_path):
    await _a_thousand_idle_members_cost_under_20_kib_each(relay_process(tmp_path / "relay.sqlite"))


@needs_nats
async def test_a_thousand_idle_members_cost_a_cluster_node_under_20_kib_each(
    relay_process, nats_server, tmp_path
):
    await _a_thousand_idle_members_cost_under_20_kib_each(
        relay_process(tmp_path / "unused.sqlite", "--cluster", nats_server.url, "--node-name", "a")
    )


async def _a_thousand_idle_members_cost_under_20_kib_each(relay: RelayProcess) -> None:
    pid = relay.proc.pid
    warm = await join_idle(relay.relay_port, 2, PER_ROOM)  # first rooms, first allocations
    before = rss(pid)
    members = await join_idle(relay.relay_port, ROOMS, PER_ROOM, sources=SOURCES)
    count = ROOMS * PER_ROOM
    assert all(m.joined.done() and m.joined.exception() is None for m in members)
    await until(lambda: open_fds(pid) >= count, what="every connection open at the relay")
    grown = rss(pid) - before
    print(f"relay memory per idle member connection: {grown / count / 1024:.1f} KiB")
    assert grown / count < GOAL, f"{grown / count / 1024:.1f} KiB per connection"

    group = Group(2)  # and the relay still serves a group among them
    alice, bob = await joined(relay.relay_port, group, 0), await joined(relay.relay_port, group, 1)
    await alice.publish(group.sealed(0, 0, b"still here"))
    assert await alice.accepted() == (1, 0)
    assert (await bob.deliver())[0] == 1
    for client in (alice, bob):
        await client.close()
    close_all(members + warm)
    await until(lambda: open_fds(pid) < count, what="the connections closed")
