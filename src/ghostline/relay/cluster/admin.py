"""What an operator does to a stopped cluster: give it a new store id (after restoring
its JetStream streams from a backup; storeadmin.py says why).

It refuses while any node of the cluster is running (one announces itself on the
presence subjects within `HEARTBEAT` seconds): a running node keeps the id it read at
start, and its members would never hear of the new one.
"""

from __future__ import annotations

import asyncio
import os

import nats
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, NotFoundError

from ...protocol.frames import STORE_ID_LEN
from .layout import CLUSTER_BUCKET, PRESENCE_SUBJECT, STORE_ID_KEY, SYNC_SUBJECT, ClusterSetupError
from .link import ClusterConfig, StorageUnavailable
from .presence import HEARTBEAT

_CONNECT_TIMEOUT = 5.0


class NodesRunning(ClusterSetupError):
    """Nodes of the cluster are running: stop them first."""

    def __init__(self, nodes: list[str]) -> None:
        super().__init__(f"relay nodes are running on this cluster: {', '.join(nodes)}")
        self.nodes = nodes


async def renew_cluster_store_id(config: ClusterConfig) -> tuple[bytes, bytes]:
    """Give the cluster in NATS at `config.servers` a new store id; returns (old, new)."""
    servers = ",".join(config.servers)
    try:
        nc = await nats.connect(
            servers=list(config.servers), allow_reconnect=False,
            connect_timeout=_CONNECT_TIMEOUT, tls=config.tls,
        )  # fmt: skip
    except Exception as err:
        raise StorageUnavailable(f"cannot reach NATS at {servers}: {err}") from err
    try:
        running = await _running_nodes(nc)
        if running:
            raise NodesRunning(running)
        js = nc.jetstream(timeout=_CONNECT_TIMEOUT)
        try:
            kv = await js.key_value(CLUSTER_BUCKET)
            entry = await kv.get(STORE_ID_KEY)
        except (NotFoundError, KeyNotFoundError) as err:
            raise ClusterSetupError(
                f"NATS at {servers} holds no GhostLine cluster (no {CLUSTER_BUCKET} bucket"
                f" with a {STORE_ID_KEY})"
            ) from err
        new = os.urandom(STORE_ID_LEN)
        await kv.update(STORE_ID_KEY, new, last=entry.revision)
        return bytes(entry.value or b""), new
    finally:
        await nc.close()


async def _running_nodes(nc: nats.NATS) -> list[str]:
    """The nodes that announce themselves within a heartbeat and a half."""
    seen: set[str] = set()

    async def heard(msg: Msg) -> None:
        if msg.data:  # an empty snapshot is a goodbye
            seen.add(msg.subject[len(PRESENCE_SUBJECT) :])

    sub = await nc.subscribe(PRESENCE_SUBJECT + "*", cb=heard)
    await nc.publish(SYNC_SUBJECT, b"")  # running nodes answer at once
    await asyncio.sleep(HEARTBEAT * 1.5)
    await sub.unsubscribe()
    return sorted(seen)
