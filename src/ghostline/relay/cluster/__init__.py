"""The cluster backend (NATS JetStream): several relay nodes sharing their rooms.

`backend.NatsBackend` is the facade; its opening comment lists the parts.
"""

from __future__ import annotations

from .backend import NatsBackend
from .layout import DEFAULT_STREAMS, MAX_STREAMS, ClusterLayoutError, ClusterSetupError
from .link import ClusterConfig, StorageUnavailable
from .ownership import score

__all__ = [
    "DEFAULT_STREAMS",
    "MAX_STREAMS",
    "ClusterConfig",
    "ClusterLayoutError",
    "ClusterSetupError",
    "NatsBackend",
    "StorageUnavailable",
    "score",
]
