"""The blind relay: stores and forwards sealed messages, tells members who is online.

It imports only the protocol's frames, envelope, handshake and rules, and `errors` and
`paths`, from GhostLine (a test keeps it so): it never sees pads, keys or plaintext.
"""

from __future__ import annotations

from .backend import Appended, Backend, Publish, RelayHub, RoomLimitReached, StoredMessage
from .config import RelayLimits, Retention
from .server import RelayServer
from .sqlite_store import SqliteBackend

__all__ = [
    "Appended",
    "Backend",
    "Publish",
    "RelayHub",
    "RelayLimits",
    "RelayServer",
    "Retention",
    "RoomLimitReached",
    "SqliteBackend",
    "StoredMessage",
]
