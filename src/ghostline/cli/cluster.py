"""`ghostline relay --cluster`: the cluster options, checked and turned into a backend.

Blind like `cli/relay.py`: it imports no pad, key or state code.
"""

from __future__ import annotations

import os
import re
import socket

from ..errors import UsageError
from ..relay.cluster import MAX_STREAMS, ClusterConfig, NatsBackend
from ..relay.config import Retention

_NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def cluster_backend(
    urls: str, node: str | None, replicas: int, streams: int | None, retention: Retention
) -> tuple[NatsBackend, str]:
    """The backend for `ghostline relay --cluster URLS`, and the line that describes it."""
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
    config = ClusterConfig(servers, name, replicas=replicas, streams=streams)
    return NatsBackend(config, retention), f"cluster {','.join(servers)} node {name}"
