"""`ghostline relay --cluster`: the cluster options, checked and turned into a backend.

Blind like `cli/relay.py`: it imports no pad, key or state code.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable

from ..errors import UsageError
from ..relay.cluster import MAX_STREAMS, ClusterConfig, NatsBackend
from ..relay.cluster.link import RECONNECT_WAIT, WAITING_REPORT
from ..relay.config import Retention

_NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def cluster_config(
    urls: str, node: str | None, replicas: int, streams: int | None
) -> ClusterConfig:
    """The cluster options, checked (UsageError for a mistake)."""
    servers = tuple(u.strip() for u in urls.split(",") if u.strip())
    if not servers or not all(u.startswith(("nats://", "tls://")) for u in servers):
        raise UsageError("--cluster takes nats://HOST:PORT or tls://HOST:PORT, comma-separated")
    name = node or re.sub(r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname()}-{os.getpid()}")
    if not _NODE_NAME.fullmatch(name):
        raise UsageError("--node-name: 1 to 64 letters, digits, '-' or '_'")
    if not 1 <= replicas <= 5:
        raise UsageError("--cluster-replicas must be 1 to 5")
    if streams is not None and not 1 <= streams <= MAX_STREAMS:
        raise UsageError(f"--cluster-streams must be 1 to {MAX_STREAMS}")
    return ClusterConfig(servers, name, replicas=replicas, streams=streams)


def cluster_backend(
    urls: str, node: str | None, replicas: int, streams: int | None, retention: Retention
) -> tuple[NatsBackend, str]:
    """The backend for `ghostline relay --cluster URLS`, and the line that describes it."""
    config = cluster_config(urls, node, replicas, streams)
    backend = NatsBackend(config, retention)
    backend.link.on_waiting = _waiting_line(",".join(config.servers))
    return backend, f"cluster {','.join(config.servers)} node {config.node}"


def _waiting_line(servers: str) -> Callable[[str, float], None]:
    said: list[bool] = []

    def say(error: str, waited: float) -> None:
        if not said:
            said.append(True)
            line = (
                f"waiting for NATS at {servers} ({error}): not serving until it answers;"
                f" trying every {RECONNECT_WAIT:g} s, for as long as it takes (said again"
                f" every {WAITING_REPORT:g} s)"
            )
        else:
            line = f"still waiting for NATS at {servers} after {waited:.0f} s ({error})"
        print(f"ghostline relay: {line}", file=sys.stderr, flush=True)

    return say
