"""Relay limits and retention, with their defaults (docs/DEPLOYMENT.md lists them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protocol.frames import DEFAULT_MAX_FRAME

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of each room the relay keeps. The oldest messages go first."""

    max_messages: int = 100_000
    max_bytes: int = 256 * 2**20
    max_age: float = 30 * DAY  # seconds


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """What one relay process accepts before it refuses, and how it refuses.

    Every refusal is an ERROR frame (docs/PROTOCOL.md section 8) and one log line.
    """

    max_frame: int = DEFAULT_MAX_FRAME  # ERROR 2
    max_connections: int = 4096  # in total, both ports; ERROR 8
    max_connections_per_address: int = 64  # per client IP; ERROR 8
    max_rooms: int = 10_000  # rooms registered in the store; ERROR 8
    # New rooms one client address may register: a burst, then a steady rate; ERROR 8.
    # With the defaults one address holds at most 20 + 10/h x 24 x 30 = 7,220 rooms
    # within the 30 days a stored message keeps a room (docs/DEPLOYMENT.md).
    new_room_burst: int = 20
    new_room_rate: float = 10 / 3600  # per second
    publish_rate: float = 500.0  # sustained PUBLISH frames per second per connection; ERROR 7
    publish_burst: int = 2000  # PUBLISH frames a connection may send at once; ERROR 7
    send_buffer: int = 4 * 2**20  # bytes queued for one slow reader; past it ERROR 8
    idle_timeout: float = 90.0  # seconds without any frame from the client (PING keeps alive)
    handshake_timeout: float = 10.0  # seconds from connect to WELCOME
    max_inflight: int = 4096  # PUBLISHes of one connection waiting for commit: pause reading
    retention: Retention = field(default_factory=Retention)
